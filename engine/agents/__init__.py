"""Agents: who proposes the next change to the editable files.

Owns the request/proposal types every agent shares (`base.py`), the choice of agent
by name, the built-in offline search, the Gemini agent (google-genai), the command
agent (any external program), the notes memory and token pricing. Never imports JAX;
google-genai is imported only when the Gemini agent is chosen.
"""
