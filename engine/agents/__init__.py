"""Agents: who proposes the next change to the editable files.

Owns the request/proposal types every agent shares (`base.py`), the choice of agent
by name, the offline agent (Optuna over the editable numbers: knobs, search_space, trials;
the earlier step search in steps), the hybrid (an LLM agent plus the tuner), the Gemini agent
(google-genai), the command agent (any external program), the notes memory and token pricing.
Never imports JAX; google-genai and Optuna are imported only when an agent that uses them is chosen.
"""
