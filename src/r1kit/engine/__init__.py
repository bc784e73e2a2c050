"""Decoding: the continuous-batching engine over transformers (batching.py), vLLM behind the same interface
(vllm_engine.py), and chats in, completions out (chats.py). Every decode in r1kit goes through here."""
