"""Building blocks shared by every API model: the strict base model, Kubernetes quantities and names."""

from __future__ import annotations

import difflib
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

# Fields marked with this key in json_schema_extra are plan-time settings of llmkube: they shape what we
# render but are not part of the LLMKube CRD, so they never appear in its schema or in a custom resource.
LLMKUBE_ONLY = "x-llmkube-only"


def llmkube_only() -> dict[str, Any]:
    return {LLMKUBE_ONLY: True}


def crd_default(value: Any) -> dict[str, Any]:
    """The default the API server fills in for an unset field, as the operator's own CRD does.

    The Python field stays None (unset is kept apart from "set to the default", so a custom resource carries
    only what the user wrote); the CRD's schema carries the default, so the controller finds it set.
    """
    return {"default": value}


def crd_schema(schema: dict[str, Any]) -> WithJsonSchema:
    """The schema the CRD carries for a type whose typed-API check is stricter than the operator's CRD.

    Our CRDs never refuse what upstream's accept (tests/test_upstream_parity.py): a bound, pattern or enum that
    protects a user but that upstream does not have is checked at preview, in the typed API, and left out of
    the CRD by annotating the type with this and upstream's own schema for the field:
    ``Annotated[int, Field(ge=0, le=4096), crd_schema({"type": "integer", "minimum": 0})]``.
    """
    return WithJsonSchema(schema)


# What each pattern means, in words: a pattern mismatch is reported with this instead of the regex.
PATTERN_HINTS: dict[str, str] = {}


def pattern(regex: str, hint: str) -> str:
    """Register the words for a pattern and return the pattern, for use as ``Field(pattern=...)``."""
    PATTERN_HINTS[regex] = hint
    return regex


def suggest(unknown: str, known: list[str]) -> list[str]:
    """Known names a typo most likely meant: a case-insensitive match first, then close spellings."""
    folded = {k.lower(): k for k in known}
    if unknown.lower() in folded:
        return [folded[unknown.lower()]]
    close = difflib.get_close_matches(unknown.lower(), list(folded), n=3, cutoff=0.6)
    return [folded[c] for c in close]


class ApiModel(BaseModel):
    """Strict, immutable, camelCase on the wire (the LLMKube JSON names), documented field by field."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=False,
        use_attribute_docstrings=False,
        str_strip_whitespace=False,
    )

    # Cross-field rules of a model, as (CEL rule for the CRD, message). The Python side of each rule is a
    # model validator on the class; the CEL twin lets the API server enforce the same rule for custom
    # resources that do not come from us.
    cel_rules: ClassVar[tuple[tuple[str, str], ...]] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _reject_unknown_fields(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        # pydantic's own extra="forbid" error names no alternative; ours suggests the field meant. The known
        # fields are still validated, so a typo does not hide the other problems of the same object.
        if not isinstance(data, dict):
            return handler(data)
        known = [f.alias or name for name, f in cls.model_fields.items()]
        unknown = [key for key in data if key not in known]
        if not unknown:
            return handler(data)
        errors: list[InitErrorDetails] = []
        for key in unknown:
            hints = suggest(str(key), known)
            # Name the likely intended field when there is one; the whole list only when there is not.
            hint = f"did you mean {' or '.join(hints)}?" if hints else f"known fields: {', '.join(sorted(known))}"
            error = PydanticCustomError(
                "llmkube_unknown_field", "unknown field {field}; {hint}", {"field": key, "hint": hint}
            )
            errors.append({"type": error, "loc": (key,), "input": data[key]})
        try:
            handler({key: value for key, value in data.items() if key in known})
        except ValidationError as exc:
            errors += [_reraisable(e) for e in exc.errors()]
        raise ValidationError.from_exception_data(cls.__name__, errors)

    def document(self) -> dict[str, Any]:
        """The JSON form with LLMKube names and unset fields left out, llmkube-only fields kept."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def wire(self) -> dict[str, Any]:
        """The JSON form with LLMKube names, unset fields left out, llmkube-only fields removed."""
        return _strip_llmkube_only(self, self.model_dump(by_alias=True, exclude_none=True, mode="json"))


def _reraisable(error: Any) -> InitErrorDetails:
    """A reported error as an input to a new ValidationError, its message and context kept as they were."""
    message = error["msg"].replace("{", "{{").replace("}", "}}")
    return {
        "type": PydanticCustomError(error["type"], message, error.get("ctx")),
        "loc": error["loc"],
        "input": error["input"],
    }


def _strip_llmkube_only(model: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get(LLMKUBE_ONLY):
            data.pop(key, None)
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel) and key in data:
            data[key] = _strip_llmkube_only(value, data[key])
    return data


# ---------------------------------------------------------------------------------------------------------
# Kubernetes quantities
# ---------------------------------------------------------------------------------------------------------

QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(text: str | int | float) -> Decimal:
    """The value of a Kubernetes quantity ("48Gi", "500m", "8", "1e3") as an exact decimal."""
    s = str(text).strip()
    match = _QUANTITY_RE.match(s)
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = match.group(1), match.group(3) or ""
    try:
        value = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from exc
    if suffix not in _SUFFIX:  # an exponent: "e3", "E6" (but "E" and "Ei" are exa suffixes)
        return value * (Decimal(10) ** int(suffix[1:]))
    return value * _SUFFIX[suffix]


def _check_quantity(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError("llmkube_quantity", "{value!r} is not a Kubernetes quantity", {"value": value})
    try:
        parse_quantity(value)
    except ValueError:
        raise PydanticCustomError(
            "llmkube_quantity",
            "{value} is not a Kubernetes quantity; write a number with an optional suffix such as 48Gi, 512Mi, 8, 500m",
            {"value": repr(value)},
        ) from None
    return str(value).strip()


Quantity = Annotated[
    str,
    BeforeValidator(_check_quantity),
    # The operator's CRD takes any string here: the quantity check is ours, at preview (see crd_schema).
    WithJsonSchema({"type": "string"}),
    Field(description="A Kubernetes quantity such as 48Gi, 512Mi, 8 or 500m."),
]


def format_bytes(value: Decimal | int | float) -> str:
    """Bytes as a short binary figure for messages: 48.0 GiB."""
    v = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------

# Object names become Deployment, Service and PVC names with suffixes such as "-model-cache", and Service
# names must be DNS-1035 labels (start with a letter): keep room for the longest suffix inside 63.
NAME_MAX = 50
NAME_PATTERN = pattern(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", "lower-case letters, digits and '-', starting with a letter")
_NAME_RE = re.compile(NAME_PATTERN)


def normalize_name(key: str) -> str:
    """The Kubernetes name a config key becomes: lower case, ``_`` and ``.`` as ``-``."""
    return re.sub(r"[_.]", "-", key.strip().lower())


def name_problem(key: str) -> str | None:
    """Why a config key cannot become an object name, or None when it can."""
    name = normalize_name(key)
    if len(name) > NAME_MAX:
        return f"{key!r} is longer than {NAME_MAX} characters"
    if not _NAME_RE.match(name):
        return (
            f"{key!r} does not make a Kubernetes name: use lower-case letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    return None


DNS_LABEL_PATTERN = pattern(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "a DNS label: lower-case letters, digits and '-', at most 63 characters"
)
DnsLabel = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=63)]

DNS_SUBDOMAIN_PATTERN = pattern(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "a Kubernetes object name: lower-case letters, digits, '-' and '.', at most 253 characters",
)
# Names of PersistentVolumeClaims, StorageClasses, PriorityClasses, ...
DnsSubdomain = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253), crd_schema({"type": "string"})]

LABEL_KEY_PATTERN = pattern(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
    "a label key: an optional DNS prefix and '/', then up to 63 letters, digits, '-', '_' or '.'",
)
LABEL_VALUE_PATTERN = pattern(
    r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
    "a label value: up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
)
LABEL_NAME_MAX = 63  # a label value, and a label key's name part; a key's DNS prefix may take 253 more


def label_problem(key: str, value: str) -> str | None:
    """Why a label (or node selector term) is not one Kubernetes takes, or None.

    Checked outside the schema: a CRD cannot constrain map keys, and the operator's CRD does not.
    """
    prefix, _, name = key.rpartition("/")
    if not re.match(LABEL_KEY_PATTERN, key) or len(name) > LABEL_NAME_MAX or len(prefix) > 253:
        return f"key {key!r} is not {PATTERN_HINTS[LABEL_KEY_PATTERN]}"
    if not re.match(LABEL_VALUE_PATTERN, value) or len(value) > LABEL_NAME_MAX:
        return f"{key}={value!r}: the value is not {PATTERN_HINTS[LABEL_VALUE_PATTERN]}"
    return None


IMAGE_PATTERN = pattern(r"^\S+$", "an image reference without whitespace")
Image = Annotated[str, Field(pattern=IMAGE_PATTERN), crd_schema({"type": "string"})]
# A string that must not be empty when given; upstream's CRD does not say so.
NonEmpty = Annotated[str, Field(min_length=1), crd_schema({"type": "string"})]


def _positive(value: str) -> str:
    # A zero size or bandwidth would make the planner divide by zero or plan for nothing.
    if parse_quantity(value) <= 0:
        raise PydanticCustomError("llmkube_rule", "{value} must be more than 0", {"value": value})
    return value


PositiveQuantity = Annotated[Quantity, AfterValidator(_positive)]
