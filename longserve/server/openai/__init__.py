"""The OpenAI-compatible facade's formats: bodies, answers and errors as
OpenAI's API shapes them. The routes are in server/http/openai.py."""
