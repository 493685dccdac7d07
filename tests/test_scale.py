"""The report's last words on a CPU or short-budget loop (engine/report/scale.py)."""
from engine.report.scale import scale_note


def run(platform="cpu", budget=30.0, steps=25, loss=5.4):
    return {"num_steps": steps, "final_loss": loss, "platform": platform, "budget_mode": "time",
            "budget_value": budget, "device": f"{platform} x2"}


def test_a_cpu_demo_says_what_it_showed_and_what_a_real_run_needs():
    text = "\n".join(scale_note([run(steps=21, loss=5.6), run(steps=28, loss=5.2), {"status": "crash"}]))
    assert "2 runs on cpu x2, each 30 s of training (21 to 28 steps, final training loss 5.20 to 5.60)" in text
    assert "shown: the whole loop" in text
    assert "an accelerator" in text and "dataset" in text and "300 s budget" in text


def test_a_real_run_gets_no_note():
    assert scale_note([run(platform="tpu", budget=300.0)]) == []
    assert scale_note([]) == []
    assert scale_note([run(platform="gpu", budget=60.0)])  # a short budget is a demo anywhere
