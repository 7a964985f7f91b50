"""Settings of the operator's other serving runtimes (vLLM, SGLang, TGI, PersonaPlex).

llmkube renders llama.cpp only; these blocks are typed so that a stack with delivery operator can hand them to
the LLMKube operator checked at preview, and so that a custom resource carrying them keeps them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel, NonEmpty


class SecretKeySelector(ApiModel):
    """A key of a Secret in the same namespace (core/v1 SecretKeySelector)."""

    key: str = Field(..., description="Key in the Secret's data.")
    name: str = Field("", json_schema_extra={"default": ""}, description="Name of the Secret.")
    optional: bool | None = Field(None, description="Start even when the Secret or key is missing.")


KvCacheDtype = Literal["auto", "fp8_e5m2", "fp8_e4m3"]


class VLLMSpeculative(ApiModel):
    """vLLM speculative decoding."""

    enabled: bool | None = Field(None, description="Turn speculative decoding on.")
    model: str | None = Field(None, description="Draft model (a Hugging Face id or a path).")
    num_speculative_tokens: Annotated[int, Field(ge=1, le=16)] | None = Field(
        None, json_schema_extra={"default": 4}, description="Tokens drafted per step (1-16, default 4)."
    )


class VLLMConfig(ApiModel):
    """vLLM engine settings."""

    attention_backend: (
        Literal["FLASH_ATTN", "FLASHINFER", "XFORMERS", "flashinfer", "flash_attn", "xformers", "torch_sdpa"] | None
    ) = Field(None, description="Attention backend.")
    cpu_offload_g_b: Annotated[int, Field(ge=0)] | None = Field(
        None, alias="cpuOffloadGB", description="GiB of weights offloaded to CPU memory."
    )
    dtype: Literal["auto", "float16", "bfloat16"] | None = Field(None, description="Weight dtype.")
    enable_chunked_prefill: bool | None = Field(None, description="Chunked prefill.")
    enable_expert_parallel: bool | None = Field(None, description="Expert parallelism for MoE models.")
    enable_prefix_caching: bool | None = Field(None, description="Automatic prefix caching.")
    gpu_memory_utilization: Annotated[float, Field(ge=0.1, le=0.99)] | None = Field(
        None, description="Share of GPU memory vLLM may use (0.1-0.99)."
    )
    hf_token_secret_ref: SecretKeySelector | None = Field(None, description="Hugging Face token.")
    kv_cache_custom_dtype: str | None = Field(
        None, description="Any KV cache dtype vLLM knows; wins over kvCacheDtype."
    )
    kv_cache_dtype: KvCacheDtype | None = Field(
        None, json_schema_extra={"default": "auto"}, description="KV cache dtype (default auto)."
    )
    max_model_len: int | None = Field(None, description="Context length.")
    max_num_batched_tokens: Annotated[int, Field(ge=512)] | None = Field(
        None, description="Most tokens per batch (at least 512)."
    )
    quantization: Literal["awq", "gptq", "squeezellm", "fp8", "nvfp4", "mxfp4", "compressed-tensors"] | None = Field(
        None, description="Weight quantization."
    )
    speculative: VLLMSpeculative | None = Field(None, description="Speculative decoding.")
    tensor_parallel_size: int | None = Field(None, description="GPUs the model is split over.")


class LoraAdapter(ApiModel):
    """A LoRA adapter SGLang loads at start."""

    name: NonEmpty = Field(..., description="Adapter name clients select.")
    path: NonEmpty = Field(..., description="Adapter path or Hugging Face id.")


class SGLangSpeculative(ApiModel):
    """SGLang speculative decoding."""

    accept_threshold_acc: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="Accept threshold (accumulated)."
    )
    accept_threshold_single: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="Accept threshold (single)."
    )
    algorithm: Literal["EAGLE", "EAGLE3", "Medusa"] | None = Field(None, description="Drafting algorithm.")
    draft_model_path: str | None = Field(None, description="Draft model path or id.")
    eagle_top_k: Annotated[int, Field(ge=1)] | None = Field(None, alias="eagleTopK", description="EAGLE top-k.")
    enabled: bool | None = Field(None, description="Turn speculative decoding on.")
    num_draft_tokens: Annotated[int, Field(ge=1)] | None = Field(
        None, json_schema_extra={"default": 4}, description="Draft tokens per step (default 4)."
    )
    num_steps: Annotated[int, Field(ge=1)] | None = Field(None, description="Drafting steps.")


class SGLangConfig(ApiModel):
    """SGLang engine settings."""

    attention_backend: Literal["flashinfer", "flash_attn", "torch_native"] | None = Field(
        None, description="Attention backend."
    )
    chat_template: str | None = Field(None, description="Chat template name or path.")
    chunked_prefill_size: Annotated[int, Field(ge=512)] | None = Field(None, description="Chunked prefill size.")
    context_length: Annotated[int, Field(ge=128)] | None = Field(None, description="Context length.")
    data_parallel_size: Annotated[int, Field(ge=1)] | None = Field(None, description="Data-parallel replicas.")
    enable_prefix_caching: bool | None = Field(None, description="Prefix caching (RadixAttention).")
    expert_parallel_size: Annotated[int, Field(ge=1)] | None = Field(None, description="Expert-parallel size.")
    hf_token_secret_ref: SecretKeySelector | None = Field(None, description="Hugging Face token.")
    kv_cache_custom_dtype: str | None = Field(None, description="Any KV cache dtype SGLang knows.")
    kv_cache_dtype: KvCacheDtype | None = Field(
        None, json_schema_extra={"default": "auto"}, description="KV cache dtype (default auto)."
    )
    log_level: Literal["debug", "info", "warning", "error"] | None = Field(None, description="Log level.")
    lora_adapters: list[LoraAdapter] | None = Field(None, description="LoRA adapters loaded at start.")
    lora_modules: list[str] | None = Field(None, description="LoRA modules.")
    lora_target_modules: list[str] | None = Field(None, description="LoRA target modules.")
    max_lora_rank: Annotated[int, Field(ge=1)] | None = Field(None, description="Largest LoRA rank.")
    max_running_requests: Annotated[int, Field(ge=1)] | None = Field(None, description="Concurrent requests.")
    mem_fraction_static: Annotated[float, Field(ge=0.1, le=0.99)] | None = Field(
        None, description="Share of GPU memory for weights and KV cache (0.1-0.99)."
    )
    quantization: str | None = Field(None, description="Weight quantization.")
    reasoning_parser: Literal["qwen3", "deepseek-r1"] | None = Field(None, description="Reasoning parser.")
    skip_tokenizer_init: bool | None = Field(None, description="Skip tokenizer initialisation.")
    speculative: SGLangSpeculative | None = Field(None, description="Speculative decoding.")
    tensor_parallel_size: Annotated[int, Field(ge=1)] | None = Field(None, description="GPUs the model is split over.")
    tool_call_parser: Literal["llama3", "qwen3", "qwen25", "hermes", "functionary", "mistral"] | None = Field(
        None, description="Tool-call parser."
    )
    trust_remote_code: bool | None = Field(None, description="Run the model repository's own code.")


class TGIConfig(ApiModel):
    """Text Generation Inference settings."""

    dtype: Literal["float16", "bfloat16"] | None = Field(None, description="Weight dtype.")
    hf_token_secret_ref: SecretKeySelector | None = Field(None, description="Hugging Face token.")
    max_input_length: int | None = Field(None, description="Longest prompt.")
    max_total_tokens: int | None = Field(None, description="Longest prompt plus answer.")
    quantize: Literal["bitsandbytes", "gptq", "awq", "eetq"] | None = Field(None, description="Quantization.")


class PersonaPlexConfig(ApiModel):
    """PersonaPlex (speech) runtime settings."""

    cpu_offload: bool | None = Field(None, description="Offload weights to CPU memory.")
    hf_token_secret_ref: SecretKeySelector | None = Field(None, description="Hugging Face token.")
    quantize4_bit: bool | None = Field(None, alias="quantize4Bit", description="Load the weights in 4 bits.")
