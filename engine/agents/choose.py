"""Choose the loop's agent by name; each is imported only when chosen."""
from __future__ import annotations

import os
from pathlib import Path

from engine.errors import UserError

AGENTS = ("offline", "gemini", "command", "gemini+tune", "command+tune")


def gemini_configured(env=None) -> bool:
    """Whether google-genai would find credentials: an API key, or Vertex AI switched on."""
    env = os.environ if env is None else env
    vertex = env.get("GOOGLE_GENAI_USE_VERTEXAI", "").strip().lower() in ("1", "true", "yes")
    return bool(env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY")) or vertex


def default_agent(env=None) -> str:
    """gemini when it is configured, else the offline agent (no network, no key)."""
    return "gemini" if gemini_configured(env) else "offline"


def check_agent(name: str | None, args) -> None:
    """Refuse, before the loop touches a branch or a folder, an agent that could not start:
    an unknown name, gemini without credentials, command without --agent-cmd."""
    name = name or default_agent()
    if name not in AGENTS:
        raise UserError(f"unknown agent {name!r}: choose one of {', '.join(AGENTS)}")
    if name.endswith("+tune"):
        check_agent(name.removesuffix("+tune"), args)
    elif name == "gemini" and not gemini_configured():
        raise UserError("--agent gemini needs GEMINI_API_KEY (or GOOGLE_API_KEY), or Vertex AI "
                        "(GOOGLE_GENAI_USE_VERTEXAI=true with GOOGLE_CLOUD_PROJECT); or use --agent offline")
    elif name == "command" and not getattr(args, "agent_cmd", None):
        raise UserError("--agent command needs --agent-cmd CMD, e.g. --agent-cmd './my_agent.sh'")


def make_agent(name: str | None, args, run_dir: Path | None = None, program=None):
    """The agent named by --agent (or the default), configured from the flags and program.md."""
    name = name or default_agent()
    check_agent(name, args)
    if name.endswith("+tune"):  # an LLM for the structure, the tuner for the numbers
        from engine.agents.hybrid import TUNE_STEPS, HybridAgent
        return HybridAgent(make_agent(name.removesuffix("+tune"), args, run_dir, program),
                           make_agent("offline", args, run_dir, program),
                           tune_steps=getattr(program, "tune_steps", None) or TUNE_STEPS)
    if name == "offline":
        from engine.agents.offline import OfflineAgent
        return OfflineAgent(seed=getattr(args, "seed", 0), bounds=getattr(program, "bounds", None),
                            sampler=getattr(program, "sampler", None) or "tpe")
    if name == "gemini":
        from engine.agents.gemini import GeminiAgent
        return GeminiAgent(model=getattr(args, "model", None), run_dir=run_dir)
    from engine.agents.command import CommandAgent
    return CommandAgent(cmd=args.agent_cmd)
