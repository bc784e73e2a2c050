"""A user-supplied reward, named by import path in a recipe (`reward_fixtures:digit_share`)."""


def digit_share(prompts, completions, **_):
    texts = [c if isinstance(c, str) else "".join(m["content"] for m in c) for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]
