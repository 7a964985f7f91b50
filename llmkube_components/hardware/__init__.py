"""Hardware profiles: what a node really has (GPUs, RAM, bandwidth), the built-ins, and composition."""

from .catalog import builtin_profiles, merge_patch, resolve_profile
from .profile import GpuHardware, HardwareProfile, Reserved, default_server_image, gpu_resource_name

__all__ = [
    "GpuHardware",
    "HardwareProfile",
    "Reserved",
    "builtin_profiles",
    "default_server_image",
    "gpu_resource_name",
    "merge_patch",
    "resolve_profile",
]
