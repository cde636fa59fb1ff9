"""Recipe: the precision of each GEMM of a linear layer and the NVFP4 switches.

A linear layer runs three GEMMs per training step (NUMERICS 7):

* fprop  ``Y = X W^T``
* dgrad  ``dX = dY W``
* wgrad  ``dW = dY^T X``

Each one runs in ``"nvfp4"``, ``"fp8"`` or ``"bf16"``. ``"bf16"`` means *not quantized*:
the GEMM runs in the layer's compute dtype (the input's dtype, or the autocast dtype),
so on a CPU model kept in FP32 it is an FP32 GEMM.

The switches only affect the NVFP4 GEMMs:

* ``rht``: random Hadamard transform on both wgrad operands (NUMERICS 6).
* ``stochastic_rounding``: SR on the gradient operand dY of dgrad and dY^T of wgrad.
* ``weight_2d``: 16x16 weight tiles for fprop and dgrad (NUMERICS 5); else 1x16.
* ``sign_vector``: the 16 RHT signs, None for TE's default vector.

The defaults are NUMERICS 7: every GEMM NVFP4, every switch on.
"""

import dataclasses
import json

from lowprec import ops

# The names live in lowprec.names (torch-free); a Recipe is spelt in them.
from lowprec.names import GEMMS, PRECISIONS

SWITCHES = ("rht", "stochastic_rounding", "weight_2d")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Per-GEMM precision and NVFP4 switches of a linear layer (immutable, hashable).

    Raises:
        ValueError: a precision outside ``PRECISIONS`` or a bad sign vector.
        TypeError: a switch that is not a bool.
    """

    fprop: str = "nvfp4"
    dgrad: str = "nvfp4"
    wgrad: str = "nvfp4"
    rht: bool = True
    stochastic_rounding: bool = True
    weight_2d: bool = True
    sign_vector: tuple | None = None

    def __post_init__(self):
        for gemm in GEMMS:
            value = getattr(self, gemm)
            if value not in PRECISIONS:
                raise ValueError(f"Recipe.{gemm} must be one of {PRECISIONS}; got {value!r}")
        for switch in SWITCHES:
            value = getattr(self, switch)
            if not isinstance(value, bool):
                raise TypeError(f"Recipe.{switch} must be a bool; got "
                                f"{type(value).__name__} {value!r}")
        if self.sign_vector is not None:
            # Normalise to a tuple of ints so that equal recipes compare and hash equal.
            object.__setattr__(self, "sign_vector", ops.check_sign_vector(self.sign_vector))

    # -- constructors -----------------------------------------------------------------

    @classmethod
    def uniform(cls, precision, **switches):
        """The same precision for all three GEMMs, e.g. ``Recipe.uniform("fp8")``."""
        return cls(fprop=precision, dgrad=precision, wgrad=precision, **switches)

    def replace(self, **changes):
        """A copy with some fields changed (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    # -- queries ----------------------------------------------------------------------

    def precisions(self):
        """``(fprop, dgrad, wgrad)``."""
        return tuple(getattr(self, gemm) for gemm in GEMMS)

    def uses(self, precision):
        """True if any GEMM runs in ``precision``."""
        return precision in self.precisions()

    @property
    def quantized(self):
        """True if any GEMM is quantized (a recipe that is all ``"bf16"`` is not)."""
        return self.precisions() != ("bf16",) * 3

    def switches(self):
        """``{name: value}`` of the NVFP4 switches and the sign vector: what a plan's
        layers share (a plan file stores them once, beside the per-layer precisions)."""
        return {name: getattr(self, name) for name in (*SWITCHES, "sign_vector")}

    def with_precisions_of(self, other):
        """This recipe's switches with ``other``'s three precisions."""
        return self.replace(**dict(zip(GEMMS, other.precisions())))

    # -- serialisation ----------------------------------------------------------------

    def to_dict(self):
        """A dict of JSON types (the sign vector as a list or None)."""
        out = dataclasses.asdict(self)
        if self.sign_vector is not None:
            out["sign_vector"] = list(self.sign_vector)
        return out

    @classmethod
    def from_dict(cls, data):
        """Inverse of ``to_dict``; missing keys take their defaults.

        Raises:
            ValueError: a key that is not a Recipe field (named in the message).
        """
        if not isinstance(data, dict):
            raise TypeError(f"Recipe.from_dict takes a dict; got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown Recipe field(s) {unknown}; known: {sorted(fields)}")
        data = dict(data)
        if data.get("sign_vector") is not None:
            data["sign_vector"] = tuple(data["sign_vector"])
        return cls(**data)

    def to_json(self):
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def __str__(self):
        gemms = "/".join(self.precisions())
        if not self.uses("nvfp4"):
            return gemms
        on = [name for name, flag in (("rht", self.rht), ("sr", self.stochastic_rounding),
                                      ("2d", self.weight_2d)) if flag]
        return f"{gemms} ({' '.join(on) or 'no switches'})"
