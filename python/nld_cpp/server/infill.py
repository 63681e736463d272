"""POST /infill (docs/server.md): llama-server's form (`input_prefix`,
`input_suffix`, `input_extra`, `prompt`: the start of the middle already
written, `n_predict`: the gap's length in tokens) and the NLD form (`text`
with gap placeholders, `gap`, `gap_tokens`, after `input_prefix`), both
filled by Model.infill (docs/generation.md "Infill") on a slot.

llama-server fills the middle left to right with a FIM-trained model; an
NLD model has no FIM tokens and needs no prompt format: the gap is a run of
masks before the suffix, denoised with the suffix in view (within its
block). The answer is /completion's object: `content` is the gap's text.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Optional

from .errors import bad_request
from .params import Defaults, Job, _seed, boolean, json_object, number, refuse_unsupported

DEFAULT_GAP = 16  # n_predict -1 (llama-server's "until done"): a gap has to have a length


def _text(body: Dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_request(f"{key} must be a string")
    return value


def _extra(body: Dict[str, Any]) -> str:
    """input_extra: [{"filename", "text"}] chunks of context, put first."""
    chunks = body.get("input_extra") or []
    if not isinstance(chunks, list) or not all(isinstance(c, dict) for c in chunks):
        raise bad_request("input_extra must be a list of {\"filename\": ..., \"text\": ...} objects")
    out = ""
    for c in chunks:
        name, text = c.get("filename", ""), c.get("text", "")
        if not isinstance(name, str) or not isinstance(text, str):
            raise bad_request("input_extra entries need string filename and text")
        out += (f"{name}\n" if name else "") + text + ("" if text.endswith("\n") else "\n")
    return out


def infill_job(body: Any, model: Any, defaults: Defaults, n_ctx: int) -> Job:
    body = json_object(body)
    refuse_unsupported(body)
    if boolean(body, "stream", False):
        raise bad_request("/infill answers in one piece: send \"stream\": false")
    if model.info.mask_token_id < 0:
        raise bad_request("this model has no mask token: /infill needs a diffusion model")
    prefix_text = _extra(body) + _text(body, "input_prefix")
    if "text" in body:  # the NLD form: gaps marked in a text
        gap = body.get("gap", "[___]")
        if not isinstance(gap, str) or not gap:
            raise bad_request("gap must be a non-empty string")
        gap_tokens = number(body, "gap_tokens", 4, integer=True, lo=1, hi=4096)
        try:
            canvas, spans = model.infill_canvas(_text(body, "text"), gap=gap, gap_tokens=gap_tokens)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
    else:  # llama-server's form: prefix [+ the middle begun] | gap | suffix
        prefix_text += _text(body, "prompt")
        n = number(body, "n_predict", -1, integer=True, lo=-1, hi=4096)
        if n == 0:
            raise bad_request("n_predict must be -1 (a gap of 16 tokens) or >= 1, got 0")
        n = DEFAULT_GAP if n == -1 else n
        canvas = [None] * n + model.tokenize(_text(body, "input_suffix"))
        spans = [(0, n)]
    prefix_ids = model.tokenize(prefix_text, add_special_tokens=boolean(body, "add_special", False))
    if not prefix_ids:
        raise bad_request("the prefix (input_extra + input_prefix + prompt) is empty: give the gap some context")
    if len(prefix_ids) + len(canvas) > n_ctx:
        raise bad_request(f"the prefix ({len(prefix_ids)} tokens) and the canvas ({len(canvas)}) do not fit "
                          f"the slot's context of {n_ctx}")
    block = number(body, "block_length", defaults.block_length if isinstance(defaults.block_length, int) else None,
                   integer=True, lo=1)
    kwargs = dict(mode="infill", canvas=canvas, spans=spans, max_tokens=sum(b - a for a, b in spans),
                  block_length=block, threshold=number(body, "threshold", None, lo=0, hi=1),
                  temperature=number(body, "temperature", 0.8, lo=0, hi=100), seed=_seed(body) or 0)
    return Job("infill", prefix_ids, kwargs, prompt_text=prefix_text)


def infill_result(model: Any, job: Job) -> Dict[str, Any]:
    """On the worker: the fill, as one result chunk with usage and nld stats."""
    kw = job.kwargs
    t0 = time.perf_counter()
    res = model.infill(job.prompt_ids, kw["canvas"], block_length=kw["block_length"], threshold=kw["threshold"],
                       temperature=kw["temperature"], seed=kw["seed"])
    wall = time.perf_counter() - t0
    fills: List[List[int]] = [res.tokens[a:b] for a, b in kw["spans"]]
    filled = [t for f in fills for t in f]
    stats = {"mode": "infill", "forwards": res.n_forwards,
             "tokens_per_forward": len(filled) / res.n_forwards if res.n_forwards else float(len(filled)),
             "accepted_lengths": [], "time_to_first_token_s": None, "total_s": wall,
             "tokens_per_s": len(filled) / wall if wall > 0 else 0.0, "seed": kw["seed"],
             "fills": [model.detokenize(f) for f in fills], "canvas": model.detokenize(res.tokens),
             "stop_type": "limit", "stopping_word": "", "draft_tokens": 0, "tokens": []}
    usage = {"prompt_tokens": len(job.prompt_ids), "completion_tokens": len(filled),
             "total_tokens": len(job.prompt_ids) + len(filled)}
    return {"choices": [{"text": model.detokenize(filled)}], "usage": usage, "nld": stats, "fill_tokens": filled}


def infill_response(chunk: Dict[str, Any], job: Job, slot_id: int, alias: str, n_ctx: int,
                    timings: Dict[str, Any], nld: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """llama-server's /infill object (that of /completion)."""
    kw = job.kwargs
    text = chunk["choices"][0]["text"]
    settings: Dict[str, Optional[Any]] = {"mode": "infill", "temperature": kw["temperature"],
                                          "block_length": kw["block_length"], "threshold": kw["threshold"],
                                          "n_predict": kw["max_tokens"], "seed": kw["seed"], "n_ctx": n_ctx}
    yield {"index": 0, "content": text, "tokens": chunk["fill_tokens"], "id_slot": slot_id, "stop": True,
           "model": alias, "tokens_predicted": chunk["usage"]["completion_tokens"],
           "tokens_evaluated": len(job.prompt_ids), "generation_settings": settings, "prompt": job.prompt_text,
           "has_new_line": "\n" in text, "truncated": False, "stop_type": "limit", "stopping_word": "",
           "tokens_cached": len(job.prompt_ids), "timings": timings, "nld": nld}
