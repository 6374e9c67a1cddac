"""Schemathesis hooks for `cargo xtask openapi-fuzz`: what the document cannot know.

Two things only, both about state outside any one request, never about what a request may hold:

- Webhook URLs (`format: uri`) are drawn on loopback, at a port where nothing listens
  (FLOCK_FUZZ_WEBHOOK_PORT): the server accepts them like any URL of the document, and every
  delivery fails at once without leaving the machine. Other URLs the fuzzer makes up would be
  resolved and posted to.
- A valid `X-Idempotency-Key` gets a suffix that no other request has: a key used again with
  another body is answered 422 `idempotency_key_reused` by design, a state the document cannot
  describe. Keys that break the document's rules are sent as drawn.
"""

import itertools
import os
import re

import schemathesis
from hypothesis import strategies as st

_PORT = int(os.environ["FLOCK_FUZZ_WEBHOOK_PORT"])
_PATH = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~/", max_size=40)
schemathesis.openapi.format(
    "uri", _PATH.map(lambda path: f"http://127.0.0.1:{_PORT}/{path}")
)

_KEY = re.compile(r"[!-~]{1,255}")
_MAX_KEY_LEN = 255
_SERIAL = itertools.count(1)


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers
    if not headers:
        return
    for name, value in list(headers.items()):
        if name.lower() != "x-idempotency-key" or not isinstance(value, str):
            continue
        if _KEY.fullmatch(value):
            suffix = f".{next(_SERIAL)}"
            headers[name] = value[: _MAX_KEY_LEN - len(suffix)] + suffix
