"""Patient subgroups of the phantoms (sex, age band, view) and a planted performance gap.

`SubgroupGap` makes the opacities of one subgroup fainter (their added attenuation
times `factor`), so a model trained on such data is worse for that subgroup by
construction: a known gap that a subgroup analysis (`evaluate --by`) must find.
The label boxes do not change (a box is where the opacity is, not how dense).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pneumokeras.errors import UserError
from pneumokeras.synth.spec import PatientSpec

# Age bands, years: (name, lowest age, highest age).
AGE_BANDS = (
    ("<18", 0, 17),
    ("18-39", 18, 39),
    ("40-59", 40, 59),
    ("60-79", 60, 79),
    ("80+", 80, 200),
)
ATTRIBUTES = {
    "sex": ("M", "F"),
    "age": tuple(name for name, _, _ in AGE_BANDS),
    "view": ("AP", "PA"),
}
DEFAULT_GAP_FACTOR = 0.5
_GAP = re.compile(r"^(?P<attribute>[a-z]+)=(?P<value>[^:]+)(:(?P<factor>.+))?$")


def age_band(age: int) -> str:
    """The band (`AGE_BANDS`) an age in years falls in."""
    for name, lowest, highest in AGE_BANDS:
        if lowest <= age <= highest:
            return name
    raise ValueError(f"age must be 0-200 years. Received: age={age}")


def attribute_of(spec: PatientSpec, attribute: str) -> str:
    """A patient's subgroup for `attribute` ("sex", "age" as its band, or "view")."""
    if attribute == "sex":
        return spec.sex
    if attribute == "age":
        return age_band(spec.age)
    if attribute == "view":
        return spec.view
    raise ValueError(f"attribute must be one of {', '.join(ATTRIBUTES)}. Received: {attribute!r}")


@dataclass(frozen=True)
class SubgroupGap:
    """Fainter opacities for the patients of one subgroup.

    Attributes:
        attribute: "sex", "age" or "view".
        value: the subgroup: M/F, an age band of `AGE_BANDS`, or AP/PA.
        factor: multiplies the added attenuation of each opacity, in [0, 1]
            (0.5: half as dense, so lower contrast).
    """

    attribute: str
    value: str
    factor: float = DEFAULT_GAP_FACTOR

    def applies_to(self, spec: PatientSpec) -> bool:
        """Whether `spec` is in the subgroup."""
        return attribute_of(spec, self.attribute) == self.value

    def apply(self, spec: PatientSpec) -> PatientSpec:
        """`spec` with its opacities scaled when it is in the subgroup, else `spec` itself."""
        if not spec.opacities or not self.applies_to(spec):
            return spec
        fainter = tuple(replace(b, amplitude=b.amplitude * self.factor) for b in spec.opacities)
        return replace(spec, opacities=fainter)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"attribute": self.attribute, "value": self.value, "factor": self.factor}


def parse_subgroup_gap(text: str) -> SubgroupGap:
    """Parses `ATTRIBUTE=VALUE[:FACTOR]`, e.g. `sex=F`, `age=80+:0.3`, `view=AP:0.6`.

    Raises:
        UserError: an unknown attribute or value, or a factor outside [0, 1].
    """
    match = _GAP.match(text.strip())
    if match is None:
        raise UserError(f"--subgroup-gap expects ATTRIBUTE=VALUE[:FACTOR]; got {text!r}")
    attribute, value = match["attribute"], match["value"]
    if attribute not in ATTRIBUTES:
        raise UserError(
            f"--subgroup-gap: unknown attribute {attribute!r} (known: {', '.join(ATTRIBUTES)})"
        )
    if attribute in ("sex", "view"):
        value = value.upper()
    if value not in ATTRIBUTES[attribute]:
        raise UserError(
            f"--subgroup-gap: {attribute} has no subgroup {value!r} "
            f"(known: {', '.join(ATTRIBUTES[attribute])})"
        )
    factor = DEFAULT_GAP_FACTOR
    if match["factor"] is not None:
        try:
            factor = float(match["factor"])
        except ValueError:
            factor = -1.0
        if not 0.0 <= factor <= 1.0:
            raise UserError(f"--subgroup-gap: FACTOR must be a number in [0, 1]; got {text!r}")
    return SubgroupGap(attribute, value, factor)
