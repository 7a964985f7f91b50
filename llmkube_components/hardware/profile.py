"""HardwareProfile: the hardware one stack (or one service) really has, and the defaults it gives services.

Every figure is a fact about a machine, so a profile says where each comes from (``sources``). The planner
sizes services against the *usable* figures (what is left after ``reserved``), never the raw ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from ..api.base import LABEL_VALUE_PATTERN, ApiModel, PositiveQuantity, Quantity, parse_quantity
from ..api.core import Toleration
from ..api.model import RESOURCE_NAME_PATTERN, GpuVendor

# ---------------------------------------------------------------------------------------------------------
# Vendor facts: the one place that maps a GPU vendor to what Kubernetes and llama.cpp call it
# ---------------------------------------------------------------------------------------------------------

LLAMACPP_IMAGE_REPOSITORY = "ghcr.io/ggml-org/llama.cpp"
# llama.cpp's CPU-only server build; a GPU profile never uses it (it would silently run on the CPU).
CPU_SERVER_IMAGE = f"{LLAMACPP_IMAGE_REPOSITORY}:server"


@dataclass(frozen=True)
class VendorDefaults:
    resource_name: str  # the extended resource its Kubernetes device plugin advertises
    server_image: str  # llama.cpp's server build for its GPUs (llama.cpp docs/docker.md)
    accelerator: str  # the LLMKube Model hardware.accelerator value for this vendor's GPUs


VENDOR_DEFAULTS: dict[str, VendorDefaults] = {
    "nvidia": VendorDefaults("nvidia.com/gpu", f"{LLAMACPP_IMAGE_REPOSITORY}:server-cuda", "cuda"),
    "amd": VendorDefaults("amd.com/gpu", f"{LLAMACPP_IMAGE_REPOSITORY}:server-rocm", "rocm"),
    "intel": VendorDefaults("gpu.intel.com/i915", f"{LLAMACPP_IMAGE_REPOSITORY}:server-intel", "intel"),
}


def gpu_resource_name(vendor: GpuVendor | str, override: str | None = None) -> str:
    """The extended resource a pod requests for one GPU: ``override`` when given, else the vendor's."""
    if override:
        return override
    try:
        return VENDOR_DEFAULTS[vendor].resource_name
    except KeyError:
        raise ValueError(f"unknown GPU vendor {vendor!r}; known: {', '.join(VENDOR_DEFAULTS)}") from None


def default_server_image(vendor: GpuVendor | str | None) -> str:
    """llama.cpp's server image for a GPU vendor, or the CPU build when there is no GPU."""
    return CPU_SERVER_IMAGE if vendor is None else VENDOR_DEFAULTS[vendor].server_image


# Pinned CPU builds are tagged server-b<build>; the GPU builds carry the backend (server-cuda13-b9445).
_CPU_SERVER_TAG = re.compile(r"^server(-b\d+)?$")
_LLAMACPP_REPOSITORIES = {LLAMACPP_IMAGE_REPOSITORY, "ghcr.io/ggerganov/llama.cpp"}  # the latter: pre-2025 name


def is_cpu_server_image(image: str) -> bool:
    """True for llama.cpp's own CPU-only server image (any build); other images cannot be told apart."""
    repository, colon, tag = image.split("@", 1)[0].rpartition(":")
    return bool(colon) and "/" not in tag and repository in _LLAMACPP_REPOSITORIES and bool(_CPU_SERVER_TAG.match(tag))


# llama.cpp's published images of any build and backend: server, server-cuda13-b9445, full-vulkan, light, ...
_PUBLISHED_TAG = re.compile(r"^(server|full|light)(-[a-z0-9]+)?(-b\d+)?$")


def is_published_image(image: str) -> bool:
    """True for an image llama.cpp publishes (built from its .devops Dockerfiles, which leave -DGGML_RPC off:
    no ggml-rpc-server in them, and their llama-server rejects --rpc)."""
    repository, colon, tag = image.split("@", 1)[0].rpartition(":")
    return bool(colon) and "/" not in tag and repository in _LLAMACPP_REPOSITORIES and bool(_PUBLISHED_TAG.match(tag))


_NON_LABEL_CHARS = re.compile(r"[^A-Za-z0-9\-_. ]")


def gpu_product_label(product: str) -> str:
    """The node label value NVIDIA GPU feature discovery writes for a product name.

    Same rule as the device plugin (k8s-device-plugin internal/lm/resource.go): drop characters a label
    cannot hold, then join the words with '-': "NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3".
    """
    return "-".join(_NON_LABEL_CHARS.sub("", product).split())


# ---------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------


GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # the node label NVIDIA GPU feature discovery sets

# Defaults of the speed figures a profile may leave out (each profile of the catalog gives its own).
# PCIe 4.0 x16: 16 GT/s x 16 lanes x 128/130 encoding / 8 bits = 31.5 GB/s per direction (PCI-SIG).
DEFAULT_LINK_BANDWIDTH = 31.5e9
# FP16 dense tensor FLOPS per byte/s of memory bandwidth: RTX 4090 165T / 1008G = 164, RTX 5060 Ti 94.9T / 448G
# = 212, H100 SXM 989T / 3.35T = 295 (NVIDIA spec sheets); the low end, so a profile without the figure does not
# promise more prompt speed than it has.
FLOPS_PER_BYTE = 160.0
# Peak FLOPS of one CPU core: 2 FMA units x 8 fp32 lanes (AVX2) x 2 flops x 3.5 GHz, a desktop core of the
# Zen 4 / Raptor Lake class.
DEFAULT_CORE_FLOPS = 112e9


class GpuHardware(ApiModel):
    """The GPUs of a node: all of one product."""

    vendor: GpuVendor = Field(..., description="GPU vendor: nvidia, amd or intel.")
    product: str = Field(
        ..., min_length=1, description="Product name as the driver reports it, e.g. NVIDIA GeForce RTX 5060 Ti."
    )
    product_label: str = Field(
        default_factory=lambda data: gpu_product_label(data.get("product", "")),
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description="The product as a node label value, as NVIDIA GPU feature discovery writes it in "
        "nvidia.com/gpu.product, e.g. NVIDIA-GeForce-RTX-5060-Ti; default: product with '-' for spaces.",
    )
    count: int = Field(1, ge=1, le=8, description="GPUs in the node (1-8).")
    memory: PositiveQuantity = Field(
        ..., description="Memory of one GPU as the driver reports it (nvidia-smi total), e.g. 16311Mi."
    )
    memory_bandwidth: PositiveQuantity = Field(
        ..., description="Memory bandwidth of one GPU in bytes per second, e.g. 448G."
    )
    compute: PositiveQuantity | None = Field(
        None,
        description="Dense FP16 tensor-core throughput of one GPU in FLOPS, without sparsity, from the spec sheet, "
        f"e.g. 165T (RTX 4090); prompt processing is bound by it. Default: memoryBandwidth x {FLOPS_PER_BYTE:g}, "
        "a rough ratio of recent GPUs, and the plan says so.",
    )
    host_link_bandwidth: PositiveQuantity | None = Field(
        None,
        description="Bandwidth of one GPU's link to the host in bytes per second, one direction (PCIe 4.0 x16: "
        "31.5G, PCIe 5.0 x8: 31.5G, PCIe 5.0 x16: 63G); weights kept in RAM cross it during prompt processing. "
        f"Default {DEFAULT_LINK_BANDWIDTH / 1e9:g}G (PCIe 4.0 x16).",
    )
    resource_name: str | None = Field(
        None,
        pattern=RESOURCE_NAME_PATTERN,
        description="Extended resource a pod requests per GPU; default by vendor: "
        + ", ".join(f"{vendor} {d.resource_name}" for vendor, d in VENDOR_DEFAULTS.items())
        + ".",
    )

    @property
    def flops(self) -> float:
        """FP16 tensor FLOPS of one GPU: the profile's, else the bandwidth-ratio default."""
        if self.compute is not None:
            return float(parse_quantity(self.compute))
        return float(parse_quantity(self.memory_bandwidth)) * FLOPS_PER_BYTE

    @property
    def link_bandwidth(self) -> float:
        return float(parse_quantity(self.host_link_bandwidth)) if self.host_link_bandwidth else DEFAULT_LINK_BANDWIDTH


# Ethernet links by name: bytes per second of payload in one direction (line rate / 8; framing is in the
# efficiency the speed estimate applies).
ETHERNET_LINKS: Final = {
    "1GbE": 125e6,
    "2.5GbE": 312.5e6,
    "5GbE": 625e6,
    "10GbE": 1.25e9,
    "25GbE": 3.125e9,
    "40GbE": 5e9,
    "100GbE": 12.5e9,
}
EthernetLink = Literal["1GbE", "2.5GbE", "5GbE", "10GbE", "25GbE", "40GbE", "100GbE"]
# A node without a network figure is taken to have the slowest common link: a plan never promises more speed
# than the hardware has.
DEFAULT_ETHERNET_LINK: Final = "1GbE"
# TCP round trip between two pods on different nodes of one switch, through the pod network: tens of
# microseconds on the wire and switch, the rest in two kernels' network stacks and the CNI's encapsulation.
DEFAULT_ROUND_TRIP_MICROSECONDS: Final = 200


class NetworkLink(ApiModel):
    """The node's link to the other nodes, which a multi-node group's activations cross."""

    link: EthernetLink | None = Field(
        None,
        description="The Ethernet link by name: "
        + ", ".join(ETHERNET_LINKS)
        + f"; default {DEFAULT_ETHERNET_LINK} unless bandwidth is given.",
    )
    bandwidth: PositiveQuantity | None = Field(
        None,
        description="Bandwidth in bytes per second, one direction, e.g. 1.25G for 10 GbE; wins over link.",
    )
    round_trip_microseconds: int = Field(
        DEFAULT_ROUND_TRIP_MICROSECONDS,
        ge=1,
        description="TCP round trip to another node's pod in microseconds, as ping or a netperf TCP_RR test shows it "
        f"(default {DEFAULT_ROUND_TRIP_MICROSECONDS}).",
    )

    @property
    def bytes_per_second(self) -> float:
        if self.bandwidth is not None:
            return float(parse_quantity(self.bandwidth))
        return ETHERNET_LINKS[self.link or DEFAULT_ETHERNET_LINK]

    @property
    def round_trip(self) -> float:
        """Seconds."""
        return self.round_trip_microseconds * 1e-6


class Reserved(ApiModel):
    """Memory the server cannot use: set aside for everything else on the node."""

    # 512Mi: llama-server's CUDA context and cuBLAS workspace take a few hundred MiB per GPU. A display on
    # the GPU takes more (an RTX 5060 Ti driving a desktop shows about 650 MiB used while idle): raise it then.
    gpu_memory: Quantity = Field(
        "512Mi",
        description="Per GPU, for the driver, the server's CUDA context and cuBLAS workspace, and a display "
        "if one is attached (default 512Mi).",
    )
    # 4Gi: MicroK8s runs in about 540 MB but asks for at least 4 GB of memory on a node (its install docs);
    # a desktop running a graphical session needs more, a profile raises it then.
    host_memory: Quantity = Field(
        "4Gi", description="For the OS, kubelet, container runtime and other pods (default 4Gi)."
    )


class HardwareProfile(ApiModel):
    """The hardware one stack or service really has, with where each figure comes from."""

    name: str = Field(..., min_length=1, description="Profile name, e.g. dual-rtx5060ti.")
    description: str = Field("", description="What machine this is, in a sentence.")
    gpu: GpuHardware | None = Field(None, description="The GPUs; unset for a CPU-only node.")
    host_memory: PositiveQuantity = Field(..., description="System RAM of the node, e.g. 64Gi.")
    host_memory_bandwidth: PositiveQuantity = Field(
        ..., description="System RAM bandwidth in bytes per second, e.g. 89.6G for DDR5-5600 dual channel."
    )
    cpu_cores: int = Field(..., ge=1, description="Physical CPU cores of the node.")
    host_compute: PositiveQuantity | None = Field(
        None,
        description="Peak FLOPS of the CPU cores llama-server uses (cores x FMA units x SIMD lanes x 2 x clock), "
        f"e.g. 1.8T; decode of weights kept in RAM on few cores is bound by it. Default: cpuCores x "
        f"{DEFAULT_CORE_FLOPS / 1e9:g}G (AVX2 at 3.5 GHz).",
    )
    # Not a fact of the machine but of the cluster: extends with nodes alone keeps the base's name (catalog.py),
    # so that services naming the built-in and a stack counting its nodes are one pool.
    nodes: int = Field(
        1,
        ge=1,
        description="Nodes of this hardware in the cluster (default 1). At preview the replicas of every service "
        "on a profile of this name are placed onto them: whole GPUs and RAM per node, GPU shares packed onto GPUs by "
        "their planned memory; what does not fit is an error, autoscaling's maxReplicas beyond it a warning. "
        "Services whose hardwareProfile names the same profile as llmkube:hardware share its nodes; extends with "
        "only nodes keeps the base's name.",
    )
    network: NetworkLink = Field(
        default_factory=NetworkLink,
        description="The node's network link to the other nodes (multiNode services send activations over it).",
    )
    reserved: Reserved = Field(default_factory=Reserved, description="Memory kept back from the server.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels that pick this hardware, e.g. nvidia.com/gpu.product."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations for the taints of this hardware's nodes."
    )
    image: str = Field(
        default_factory=lambda data: default_server_image(gpu.vendor if (gpu := data.get("gpu")) else None),
        min_length=1,
        description="Default llama.cpp server image; default by GPU vendor: "
        + ", ".join(f"{vendor} {d.server_image}" for vendor, d in VENDOR_DEFAULTS.items())
        + f"; without a GPU {CPU_SERVER_IMAGE}.",
    )
    sources: list[str] = Field(
        default_factory=list, description="Where each figure comes from: spec sheets, measurements."
    )

    # Cross-field rules are field validators (not model validators) so that an error names the field.
    # info.data holds the fields declared above the checked one; a field that failed is missing from it.

    @field_validator("reserved")
    @classmethod
    def _reserve_leaves_memory(cls, reserved: Reserved, info: ValidationInfo) -> Reserved:
        gpu: GpuHardware | None = info.data.get("gpu")
        if gpu is not None and parse_quantity(reserved.gpu_memory) >= parse_quantity(gpu.memory):
            raise _rule(
                "gpuMemory {reserved} leaves nothing of the {memory} of each GPU; lower it",
                reserved=reserved.gpu_memory,
                memory=gpu.memory,
            )
        host = info.data.get("host_memory")
        if host is not None and parse_quantity(reserved.host_memory) >= parse_quantity(host):
            raise _rule(
                "hostMemory {reserved} leaves nothing of the {memory} hostMemory; lower it",
                reserved=reserved.host_memory,
                memory=host,
            )
        return reserved

    @field_validator("node_selector")
    @classmethod
    def _selector_matches_gpu(cls, selector: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # A selector left over from another product (say after extends changed gpu.product) matches no
        # node, and the pod would stay Pending without a word: refuse it at preview instead.
        gpu: GpuHardware | None = info.data.get("gpu")
        value = selector.get(GPU_PRODUCT_LABEL)
        if gpu is not None and gpu.vendor == "nvidia" and value is not None and value != gpu.product_label:
            raise _rule(
                "{label}={value} does not select the profile's GPU {product}; its label value is {expected}",
                label=GPU_PRODUCT_LABEL,
                value=value,
                product=gpu.product,
                expected=gpu.product_label,
            )
        return selector

    @field_validator("image")
    @classmethod
    def _gpu_needs_gpu_image(cls, image: str, info: ValidationInfo) -> str:
        gpu: GpuHardware | None = info.data.get("gpu")
        if gpu is not None and is_cpu_server_image(image):
            raise _rule(
                "{image} is llama.cpp's CPU-only build, but this profile has {count} x {product}: "
                "use a GPU build such as {suggested}",
                image=image,
                count=gpu.count,
                product=gpu.product,
                suggested=default_server_image(gpu.vendor),
            )
        return image

    # Derived figures: plain properties, so they never show up in a dump (a dump is what extends merges onto).

    @property
    def gpu_count(self) -> int:
        return self.gpu.count if self.gpu else 0

    @property
    def gpu_resource_name(self) -> str | None:
        """The extended resource a pod requests per GPU, None for a CPU-only profile."""
        return gpu_resource_name(self.gpu.vendor, self.gpu.resource_name) if self.gpu else None

    @property
    def usable_gpu_memory(self) -> int:
        """Bytes of one GPU the server can use after the reserve; 0 for a CPU-only profile."""
        if self.gpu is None:
            return 0
        return int(parse_quantity(self.gpu.memory) - parse_quantity(self.reserved.gpu_memory))

    @property
    def host_flops(self) -> float:
        """Peak FLOPS of the server's CPU cores: hostCompute, else cpuCores x DEFAULT_CORE_FLOPS."""
        if self.host_compute is not None:
            return float(parse_quantity(self.host_compute))
        return self.cpu_cores * DEFAULT_CORE_FLOPS

    @property
    def usable_host_memory(self) -> int:
        """Bytes of system RAM the server can use after the reserve."""
        return int(parse_quantity(self.host_memory) - parse_quantity(self.reserved.host_memory))


def _rule(template: str, **ctx: Any) -> PydanticCustomError:
    # "llmkube_rule" errors are written in house style already; the error conversion passes them through.
    return PydanticCustomError("llmkube_rule", template, ctx)
