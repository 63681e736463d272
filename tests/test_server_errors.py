"""Bad requests and what they get: each a status, llama-server's error
shape, and a message naming the field; API keys (none and a wrong one get
401, /health stays public); CORS preflight; the body size limit; unknown
and unsupported routes. The server keeps serving after every one."""

from __future__ import annotations

import json

import pytest

from nld_cpp.testing.server import running_server

pytestmark = pytest.mark.server

MSG = [{"role": "user", "content": "Copy: a b"}]
CHAT = "/v1/chat/completions"
LONG = list(range(1000, 1600))  # 600 token ids: over the 512-token context

# (route, body, status, error type, text the message must contain)
BAD_INPUTS = [
    (CHAT, {"messages": MSG, "max_tokens": -1}, 400, "invalid_request_error", "max_tokens"),
    (CHAT, {"messages": MSG, "max_tokens": "8"}, 400, "invalid_request_error", "max_tokens must be an integer"),
    (CHAT, {"messages": MSG, "max_completion_tokens": 0}, 400, "invalid_request_error", "max_completion_tokens"),
    (CHAT, {"messages": MSG, "temperature": -0.5}, 400, "invalid_request_error", "temperature"),
    (CHAT, {"messages": MSG, "temperature": "hot"}, 400, "invalid_request_error", "temperature"),
    (CHAT, {"messages": MSG, "top_p": 0}, 400, "invalid_request_error", "top_p"),
    (CHAT, {"messages": MSG, "top_p": 1.5}, 400, "invalid_request_error", "top_p"),
    (CHAT, {"messages": MSG, "top_k": -2}, 400, "invalid_request_error", "top_k"),
    (CHAT, {"messages": MSG, "mode": "fast"}, 400, "invalid_request_error", "mode must be one of"),
    (CHAT, {"messages": MSG, "mode": "diffusion", "block_length": 0}, 400, "invalid_request_error", "block_length"),
    (CHAT, {"messages": MSG, "mode": "diffusion", "block_length": 1}, 400, "invalid_request_error", "block_length"),
    (CHAT, {"messages": MSG, "threshold": 2}, 400, "invalid_request_error", "threshold"),
    (CHAT, {"messages": MSG, "mode": "spec-quadratic", "threshold": 0.5}, 400, "invalid_request_error",
     "threshold"),
    (CHAT, {"messages": MSG, "seed": -5}, 400, "invalid_request_error", "seed"),
    (CHAT, {"messages": MSG, "stream": "yes"}, 400, "invalid_request_error", "stream must be true or false"),
    (CHAT, {"messages": MSG, "stop": [""]}, 400, "invalid_request_error", "stop"),
    (CHAT, {"messages": MSG, "stop": 5}, 400, "invalid_request_error", "stop"),
    (CHAT, {"messages": MSG, "use_lora": 1}, 400, "invalid_request_error", "use_lora"),
    (CHAT, {"messages": MSG, "n": 3}, 400, "invalid_request_error", "n is not supported"),
    (CHAT, {"messages": MSG, "logprobs": True}, 400, "invalid_request_error", "logprobs is not supported"),
    (CHAT, {"messages": MSG, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
     "invalid_request_error", "tools is not supported"),
    (CHAT, {"messages": MSG, "presence_penalty": 0.5}, 400, "invalid_request_error", "presence_penalty"),
    (CHAT, {"messages": MSG, "response_format": {"type": "json_object"}}, 400, "invalid_request_error",
     "response_format"),
    (CHAT, {"messages": []}, 400, "invalid_request_error", "messages must be a non-empty list"),
    (CHAT, {"messages": "hello"}, 400, "invalid_request_error", "messages must be a non-empty list"),
    (CHAT, {}, 400, "invalid_request_error", "messages"),
    (CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_request_error", "messages[0].role"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "invalid_request_error", "messages[0].content"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "invalid_request_error",
     "messages[0].content[0]"),
    (CHAT, {"messages": ["hi"]}, 400, "invalid_request_error", "messages[0] must be an object"),
    (CHAT, [1, 2], 400, "invalid_request_error", "must be a JSON object"),
    (CHAT, {"messages": [{"role": "user", "content": "word " * 700}]}, 400, "exceed_context_size_error",
     "context"),
    ("/v1/completions", {"prompt": [1, 2, 999999]}, 400, "invalid_request_error", "prompt[2] = 999999"),
    ("/v1/completions", {"prompt": [5, -1]}, 400, "invalid_request_error", "prompt[1] = -1"),
    ("/v1/completions", {"prompt": [5, "x"]}, 400, "invalid_request_error", "prompt[1]"),
    ("/v1/completions", {"prompt": ""}, 400, "invalid_request_error", "prompt is empty"),
    ("/v1/completions", {"prompt": ["a", "b"]}, 400, "invalid_request_error", "several prompts"),
    ("/v1/completions", {"prompt": 7}, 400, "invalid_request_error", "prompt must be"),
    ("/v1/completions", {}, 400, "invalid_request_error", "prompt is required"),
    ("/v1/completions", {"prompt": LONG}, 400, "exceed_context_size_error", "context"),
    ("/completion", {"prompt": "hi", "n_predict": -3}, 400, "invalid_request_error", "n_predict"),
    ("/completion", {"prompt": "hi", "n_probs": 5}, 400, "invalid_request_error", "n_probs"),
    ("/completion", {"prompt": "hi", "grammar": "root ::= x"}, 400, "invalid_request_error", "grammar"),
    ("/tokenize", {"content": 5}, 400, "invalid_request_error", "content must be a string"),
    ("/detokenize", {"tokens": [1, 1 << 40]}, 400, "invalid_request_error", "tokens[1]"),
    ("/detokenize", {"tokens": "abc"}, 400, "invalid_request_error", "tokens"),
    ("/apply-template", {"messages": [{"role": "user"}, 3]}, 400, "invalid_request_error", "messages[1]"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(["--max-body-size", "65536"], log_dir=tmp_path_factory.mktemp("srv")) as srv:
        yield srv


def check_error(status: int, body: bytes, want_status: int, want_type: str, needle: str) -> dict:
    assert status == want_status, body
    err = json.loads(body)["error"]
    assert err["code"] == want_status and err["type"] == want_type, err
    assert needle in err["message"], err
    return err


@pytest.mark.parametrize("route,body,status,type_,needle", BAD_INPUTS,
                         ids=[f"{r}-{n}" for r, _, _, _, n in BAD_INPUTS])
def test_bad_input(server, route, body, status, type_, needle):
    got_status, _, got = server.request("POST", route, body)
    err = check_error(got_status, got, status, type_, needle)
    if type_ == "exceed_context_size_error":
        assert err["n_ctx"] == 512 and err["n_prompt_tokens"] > 512


@pytest.mark.parametrize("raw,needle", [(b"{not json", "not valid JSON"), (b"", "no body"),
                                        (b"\xff\xfe{}", "not valid JSON")])
def test_malformed_body(server, raw, needle):
    status, _, body = server.request("POST", CHAT, raw=raw)
    check_error(status, body, 400, "invalid_request_error", needle)


def test_body_size_limit(server):
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 70000}]}).encode()
    status, _, body = server.request("POST", CHAT, raw=big)
    check_error(status, body, 413, "invalid_request_error", "limit")


def test_routes_not_found_and_not_supported(server):
    status, _, body = server.request("GET", "/v2/nothing")
    check_error(status, body, 404, "not_found_error", "/v2/nothing")
    status, _, body = server.request("POST", "/v1/embeddings", {"input": "x"})
    check_error(status, body, 501, "not_supported_error", "/v1/embeddings")
    status, _, body = server.request("GET", CHAT)
    check_error(status, body, 405, "invalid_request_error", "GET")


def test_still_serving_after_the_bad_inputs(server):
    status, got = server.json("POST", CHAT, {"messages": MSG, "max_tokens": 4, "temperature": 0})
    assert status == 200 and got["choices"][0]["message"]["content"] is not None


def test_cors_preflight(server):
    status, headers, _ = server.request("OPTIONS", CHAT, headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"})
    headers = {k.lower(): v for k, v in headers.items()}
    assert status == 200
    assert headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "POST" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"].lower()


def test_api_keys(tmp_path):
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text("second-key\n\n")
    with running_server(["--api-key", "first-key", "--api-key-file", str(keyfile)], log_dir=tmp_path) as srv:
        body = {"messages": MSG, "max_tokens": 2}
        for headers, needle in (({}, "No API key"), ({"Authorization": "Bearer wrong"}, "Invalid API Key"),
                                ({"X-Api-Key": "first-key-x"}, "Invalid API Key"),
                                ({"Authorization": "first-key"}, "No API key")):  # not in the Bearer form
            status, _, got = srv.request("POST", CHAT, body, headers=headers)
            check_error(status, got, 401, "authentication_error", needle)
        for headers in ({"Authorization": "Bearer first-key"}, {"X-Api-Key": "second-key"},
                        {"authorization": "bearer second-key"}):
            assert srv.request("POST", CHAT, body, headers=headers)[0] == 200
        assert srv.json("GET", "/health") == (200, {"status": "ok"})
        assert srv.json("GET", "/v1/models")[0] == 200
        assert srv.request("GET", "/props")[0] == 401
        assert srv.request("GET", "/")[0] == 200  # the page is public; it sends the key it is given
        status, headers, _ = srv.request("OPTIONS", CHAT, headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"})
        assert status == 200  # preflights carry no key


def test_a_bad_cache_type_from_the_environment_is_refused():
    import subprocess
    import sys

    import os

    res = subprocess.run([sys.executable, "-m", "nld_cpp.server", "--port", "0"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, NLD_ARG_CACHE_TYPE_V="bf16"))
    assert res.returncode != 0 and "--cache-type-v must be one of f32, f16, q8_0, got 'bf16'" in res.stderr
    assert "Traceback" not in res.stderr


def test_keys_from_the_environment_and_bad_flags(tmp_path):
    with running_server([], log_dir=tmp_path, env={"NLD_API_KEY": "k1,k2", "NLD_ARG_N_PARALLEL": "2"}) as srv:
        assert srv.request("GET", "/slots")[0] == 401
        status, slots = srv.json("GET", "/slots", headers={"Authorization": "Bearer k2"})
        assert status == 200 and len(slots) == 2


@pytest.mark.parametrize("args,needle", [(["-np", "0"], "--parallel must be >= 1"),
                                         (["--threshold", "3"], "--threshold must be in [0, 1]"),
                                         (["-m", "/no/such/model.gguf"], "model file not found"),
                                         (["-ctk", "q4_0"], "invalid choice: 'q4_0'")])
def test_bad_command_line_is_one_clear_error(tmp_path, args, needle):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "nld_cpp.server", "--port", "0", *args], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0 and needle in res.stderr + res.stdout
    assert "Traceback" not in res.stderr
