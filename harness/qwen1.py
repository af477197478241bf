"""Qwen-1 (`model_type: qwen`, the reference's Qwen-1_8B/7B/14B/72B): the hub's own remote code, run
unmodified under transformers 5. Users' caches hold those files as downloaded, so every fix is applied
from outside, at load time, and only to this family (harness.models dispatches here by model_type).
The seven facts are in ../shared/assets/qwen1-remote-code/README.md; docs/footguns.md has the story.

1. `transformers_stream_generator` (used only by `chat_stream`) cannot import under transformers 5, and
   transformers' check_imports imports every module a remote file names: a stand-in module is put in
   sys.modules while the remote code is resolved, then removed again.
2. `get_head_mask` (removed in transformers 5) is given back to the remote classes.
3. Transformers 5 re-runs the model's own `_init_weights` on modules whose non-persistent buffers were
   "not loaded"; Qwen's c_proj rule writes with `.data.normal_` (no loaded-flag check) and would overwrite
   the checkpoint. The wrapped `_init_weights` puts every loaded parameter back.
4. `auto_map` has no AutoModel: load AutoModelForCausalLM and keep `.transformer`, as the reference does.
5. The tokenizer has no pad token: pad = `<|endoftext|>` (id 151643).
6. The precision flags are set from the requested dtype, so the model never casts itself to bf16.
"""
from __future__ import annotations

import contextlib
import os
import sys
import types
from pathlib import Path

import torch

PAD_TOKEN, PAD_ID = "<|endoftext|>", 151643
ASSETS_ENV = "W2S_QWEN1_CODE"
_STUB = "transformers_stream_generator"
_PATCHED = "_w2s_qwen1_patched"


def assets_dir() -> Path:
    """The hub's Qwen-1 code (no weights): $W2S_QWEN1_CODE, else ../shared/assets/qwen1-remote-code."""
    env = os.environ.get(ASSETS_ENV)
    path = Path(env).expanduser() if env else Path(__file__).resolve().parents[1].parent / "shared/assets/qwen1-remote-code"
    if not (path / "modeling_qwen.py").is_file():
        raise FileNotFoundError(f"Qwen-1 remote code not found at {path} (no modeling_qwen.py); set {ASSETS_ENV} to "
                                f"a folder holding the hub's Qwen-1 code (e.g. ../shared/assets/qwen1-remote-code)")
    return path


@contextlib.contextmanager
def stream_generator_stub():
    """A stand-in `transformers_stream_generator` in sys.modules while the remote code is resolved and
    imported; whatever was there before (nothing, or a real but broken install) is restored after."""
    saved = {k: sys.modules.get(k) for k in (_STUB, _STUB + ".main")}
    # Empty modules: check_imports only imports the name; `chat_stream` (never called) would then fail
    # with "cannot import name NewGenerationMixin".
    stub, main = types.ModuleType(_STUB), types.ModuleType(_STUB + ".main")
    stub.main, stub.__path__ = main, []
    sys.modules.update({_STUB: stub, _STUB + ".main": main})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _get_head_mask(self, head_mask, num_hidden_layers: int, is_attention_chunked: bool = False):
    """transformers 4.x's ModuleUtilsMixin.get_head_mask (removed in 5), as the remote code expects it."""
    if head_mask is None:
        return [None] * num_hidden_layers
    if head_mask.dim() == 1:
        head_mask = head_mask[None, None, :, None, None].expand(num_hidden_layers, -1, -1, -1, -1)
    elif head_mask.dim() == 2:
        head_mask = head_mask[:, None, :, None, None]
    head_mask = head_mask.to(dtype=self.dtype)
    return head_mask.unsqueeze(-1) if is_attention_chunked else head_mask


def _guard_init(init_weights):
    """Run the remote `_init_weights`, then restore every parameter that was loaded from the checkpoint
    (transformers marks them `_is_hf_initialized`); parameters that were not loaded keep their init."""
    def _init_weights(self, module):
        params = list(module.parameters())
        loaded = [p for p in params if getattr(p, "_is_hf_initialized", False)]
        if params and len(loaded) == len(params):
            return
        saved = [p.detach().clone() for p in loaded]
        init_weights(self, module)
        with torch.no_grad():
            for p, s in zip(loaded, saved):
                p.copy_(s)
    return _init_weights


def patch_classes(cls: type) -> type:
    """Give the remote base class (the one defining `_init_weights`) get_head_mask and the init guard.
    The classes live in transformers' dynamic-module cache, not in the files: nothing is edited."""
    base = next((c for c in cls.__mro__ if "_init_weights" in vars(c)), cls)
    if not vars(base).get(_PATCHED):
        if not hasattr(base, "get_head_mask"):
            base.get_head_mask = _get_head_mask
        base._init_weights = _guard_init(vars(base)["_init_weights"])
        setattr(base, _PATCHED, True)
    return cls


def model_class(config, model_id: str, revision: str | None):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    ref = (getattr(config, "auto_map", None) or {}).get("AutoModelForCausalLM")
    if ref is None:
        raise ValueError(f"{model_id}: a Qwen-1 config needs auto_map.AutoModelForCausalLM (the hub's config.json has it)")
    with stream_generator_stub():
        return patch_classes(get_class_from_dynamic_module(ref, model_id, revision=revision, code_revision=revision))


def prepare_config(config, dtype: torch.dtype) -> None:
    """Precision flags from the requested dtype (all three false => the model picks bf16 on its own)."""
    config.bf16, config.fp16, config.fp32 = dtype == torch.bfloat16, dtype == torch.float16, dtype == torch.float32
    config.use_cache = False      # no KV cache in a classifier (and none under checkpointing)


def load_backbone(model_id: str, revision: str | None, config, dtype: torch.dtype, trust_remote_code: bool):
    """AutoModelForCausalLM, then `.transformer` (the reference's wrapper); the LM head is dropped."""
    from transformers import AutoModelForCausalLM

    if not trust_remote_code:
        raise ValueError(f"{model_id} is Qwen-1 (model_type qwen): it runs the hub's own code; set "
                         f"`trust_remote_code: true` on the model in the manifest")
    prepare_config(config, dtype)
    model_class(config, model_id, revision)     # resolved and patched first; Auto* then gets the same class
    with stream_generator_stub():
        lm = AutoModelForCausalLM.from_pretrained(model_id, revision=revision, config=config, dtype=dtype,
                                                  trust_remote_code=True)
    if not getattr(type(lm), _PATCHED, False):
        raise RuntimeError(f"{model_id}: AutoModelForCausalLM returned {type(lm).__qualname__}, not the patched Qwen-1 class")
    return lm.transformer


def prepare_tokenizer(tok):
    """Pad with `<|endoftext|>`; any other string (e.g. '[PAD]') silently yields pad_token_id None."""
    tok.pad_token = PAD_TOKEN
    if tok.pad_token_id != PAD_ID:
        raise RuntimeError(f"Qwen-1 tokenizer: {PAD_TOKEN} has id {tok.pad_token_id}, expected {PAD_ID}")
    return tok
