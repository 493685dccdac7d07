"""Write tickets.jsonl: 1,200 labeled support tickets, the same on every run.

    python examples/support-routing/make_tickets.py

How they are made: each category (taxonomy.py) has a set of hand-written ticket
templates, written to sound like real customer messages, with slots (products, order
numbers, amounts, dates, error codes, devices, plans) filled from lists. A ticket is
an opener, one template of its category, sometimes a sentence that mentions another
category's words in passing (a customer with a delivery problem who says "I don't want
a refund"), sometimes a second detail, and a sign-off; then light noise: lower case,
a dropped punctuation mark, a common typo. That keeps keyword rules honest: the
obvious word is often present in tickets of other categories too. A seeded random
generator makes the file identical on every run; the first 600 tickets are the dev
split the loop scores, the other 600 the test split only the report scores.
"""
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 14
COUNT = 1200

SLOTS = {
    "product": ["wireless headphones", "standing desk", "coffee grinder", "4K monitor", "yoga mat", "air purifier",
                "mechanical keyboard", "running shoes", "baby monitor", "cast iron pan", "smart thermostat",
                "backpack", "desk lamp", "electric kettle", "phone case"],
    "order": [f"#{n}" for n in range(48213, 48213 + 400, 7)],
    "amount": ["$12.99", "$49.00", "$79.95", "$120.00", "$9.99", "$249.50", "$34.10", "€59.00", "£18.75"],
    "date": ["Monday", "last Tuesday", "March 3rd", "the 14th", "yesterday", "two weeks ago", "on Friday",
             "the 1st of the month"],
    "code": ["E-1042", "ERR_TIMEOUT", "500 Internal Server Error", "error 0x80070005", "SYNC_FAILED",
             "403 Forbidden", "code 17", "NETWORK_UNREACHABLE"],
    "device": ["iPhone 14", "Pixel 8", "Windows 11 laptop", "MacBook Air", "iPad", "Galaxy S23", "Chromebook",
               "Firefox on Ubuntu"],
    "plan": ["Basic", "Pro", "Team", "Enterprise", "annual", "monthly", "Family"],
    "carrier": ["UPS", "FedEx", "DHL", "USPS", "the courier", "Royal Mail"],
    "days": ["3", "5", "8", "10", "12", "two", "three"],
}

TEMPLATES = {
    "billing": [
        "I was charged {amount} twice for order {order} and only placed it once.",
        "My card statement shows a charge of {amount} from you {date} that I don't recognize.",
        "Can you send me an invoice for my {plan} subscription? Our accounts team needs a VAT number on it.",
        "The price at checkout was {amount} but my bank shows a higher amount. Please correct the charge.",
        "I cancelled my {plan} plan but I was still billed {amount} {date}.",
        "Why did my subscription renew at a different price? Nobody told me the fee went up.",
        "The payment keeps getting declined even though my card works everywhere else.",
        "I need a receipt for {order}, the one in my email has the wrong billing address.",
        "Please refund the duplicate payment of {amount}, I see two identical transactions.",
        "Is there a way to switch from monthly to annual billing and get the discount?",
        "You applied sales tax to my order {order} but we are tax exempt, certificate attached.",
        "The promo code was accepted but I was charged full price, {amount}.",
    ],
    "technical": [
        "The app crashes as soon as I open it on my {device}.",
        "I keep getting {code} when I try to sync my {product} with the app.",
        "The website won't load past the spinner on {device}, I've cleared the cache already.",
        "After the latest update the {product} disconnects from wifi every few minutes.",
        "Checkout page throws {code} when I click Pay, tried two browsers.",
        "The firmware update for my {product} failed halfway and now it won't turn on.",
        "Notifications stopped working on my {device} since {date}.",
        "Your API returns {code} for every request since {date}, our integration is down.",
        "The {product} pairs with bluetooth but there's no sound, is this a known bug?",
        "Search on the site returns nothing, even for products I can see on the homepage.",
        "The app logs me out every time I switch screens on {device}, then shows {code}.",
        "Export to CSV produces an empty file, I tried it on {device} too.",
    ],
    "account": [
        "I can't log in, the password reset email never arrives.",
        "Please change the email address on my account, I no longer use the old one.",
        "Someone changed my password and I'm locked out of my account.",
        "How do I delete my account and all my personal data?",
        "Two-factor authentication codes aren't arriving on my new phone number.",
        "I'd like to merge my two accounts, I accidentally signed up twice.",
        "My account says it's been suspended and I don't know why.",
        "How do I add a colleague to our {plan} team account as an admin?",
        "I forgot my username and the account recovery form keeps rejecting my details.",
        "Please update my name and phone number in my profile, the form won't save.",
        "I got an email about a login from a device I don't own, is my account compromised?",
        "How can I download a copy of the data you hold on my account?",
    ],
    "shipping": [
        "My order {order} still hasn't arrived, the tracking hasn't updated in {days} days.",
        "Tracking says delivered but there's no package at my door.",
        "{carrier} left my {product} at the wrong address.",
        "Can I change the delivery address for order {order}? It hasn't shipped yet.",
        "The box arrived crushed and the {product} inside is dented.",
        "Do you ship to Canada, and how long does delivery usually take?",
        "I paid for express shipping but the order took {days} days.",
        "The tracking number for {order} doesn't work on the {carrier} website.",
        "Half of my order arrived, where is the rest of it? Order {order}.",
        "Can I pick up my order from the warehouse instead of waiting for the courier?",
        "My package has been stuck in customs since {date}.",
        "{carrier} says the address is incomplete and is sending my parcel back.",
    ],
    "returns": [
        "I'd like to return the {product}, it's not what I expected.",
        "How do I get a return label for order {order}?",
        "I sent the {product} back {date}, when will I get my refund?",
        "The {product} is defective, can I exchange it for a new one?",
        "Is it too late to return something I bought {days} weeks ago?",
        "I received the wrong size, I want to swap it for a larger one.",
        "The return portal says my order {order} is not eligible for return. Why?",
        "Your warehouse received my return {date} but the refund hasn't shown up yet.",
        "Can I return a gift without the receipt?",
        "I want to send back the {product}, the box is unopened.",
        "The replacement {product} has the same fault as the first one, I'd like my money back.",
        "Do I have to pay for return postage if the item was faulty?",
    ],
    "sales": [
        "Do you offer volume discounts if we buy 50 {product}s for our office?",
        "What's the difference between the Basic and Pro plans?",
        "Is the {product} going to be back in stock soon?",
        "Can I get a quote for the Enterprise plan for 200 users?",
        "Do you have a student or nonprofit discount?",
        "Does the {product} come with a warranty, and can I extend it?",
        "We're a reseller, can we set up a wholesale account with you?",
        "Is there a free trial of the {plan} plan before I commit?",
        "Which {product} would you recommend for a small apartment?",
        "Will the {product} be part of the Black Friday sale?",
        "I'd like to talk to someone about a partnership with your company.",
        "Can I pre-order the new {product} model?",
    ],
}
# Passing mentions of other categories' words, so a keyword alone is not the label.
ASIDES = {
    "billing": ["I don't want to return anything, I just want the charge fixed.",
                "I can log in to my account fine, it's just the payment."],
    "technical": ["I'm not asking for a refund, I just want it to work.",
                  "My account and password are fine, it's the app itself.",
                  "The order arrived on time, this is about the software."],
    "account": ["I have an order on the way so I need access soon.",
                "This isn't about billing, my payment details are correct."],
    "shipping": ["I don't want a refund, I just want my package.",
                 "I can see the order in my account but not the parcel.",
                 "I already paid for it, the charge went through."],
    "returns": ["The delivery was fast, the item just isn't right.",
                "I paid by card, so please refund it to the same card.",
                "I logged into my account but couldn't find the return button."],
    "sales": ["We already have an account with you for support.",
              "Shipping to our office would need to be by the end of the month.",
              "If the price is right we'll pay by invoice."],
}
OPENERS = ["Hi,", "Hello,", "Hi there,", "Good morning,", "Hey team,", "Dear support,", "", "", "Hello support team,"]
CLOSERS = ["Thanks.", "Thank you!", "Thanks in advance.", "Regards, Sam", "Cheers", "", "", "Please help.",
           "This is urgent.", "Best, Priya", "- Jordan"]
TYPOS = {"receive": "recieve", "address": "adress", "definitely": "definately", "the ": "teh ",
         "password": "pasword", "account": "acount", "refund": "refudn", "shipping": "shiping"}


def ticket(rng: random.Random, category: str) -> str:
    text = rng.choice(TEMPLATES[category])
    if rng.random() < 0.45:
        text += " " + rng.choice(ASIDES[category])
    if rng.random() < 0.25:
        text += " " + rng.choice(TEMPLATES[category])
    text = text.format(**{k: rng.choice(v) for k, v in SLOTS.items()})
    parts = [rng.choice(OPENERS), text, rng.choice(CLOSERS)]
    text = " ".join(p for p in parts if p)
    if rng.random() < 0.2:
        text = text.lower()
    if rng.random() < 0.2:
        wrong, right = rng.choice(list(TYPOS.items()))[::-1]
        text = text.replace(right, wrong, 1)
    return text


def main() -> None:
    rng = random.Random(SEED)
    categories = sorted(TEMPLATES)
    lines = []
    for number in range(COUNT):
        category = rng.choice(categories)
        lines.append(json.dumps({"id": number + 1, "split": "dev" if number < COUNT // 2 else "test",
                                 "text": ticket(rng, category), "label": category}))
    (HERE / "tickets.jsonl").write_text("\n".join(lines) + "\n")
    print(f"wrote {COUNT} tickets to {HERE / 'tickets.jsonl'}")


if __name__ == "__main__":
    main()
