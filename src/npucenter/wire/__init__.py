"""The OpenAI wire, shared by the gateway, the engines and the load generator.

``http1`` the keep-alive HTTP/1.1 client; ``sse`` writing, splitting and parsing server-sent
events; ``tokens`` the one token-counting rule and synthetic text; ``openai`` request parsing and
response shapes; ``fake`` the fake OpenAI server (ASGI or raw streams). Below every face that
speaks HTTP; imports nothing of npucenter but ``errors``.
"""
