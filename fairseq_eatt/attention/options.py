"""Options of attention variants, each declared once.

A variant lists its constructor options in ``options``; from each :class:`Option` come the command-line flag with
its help and default, the value read from parsed flags (``kwargs_from_args``), the checkpoint metadata (the glue
stores ``kwargs_from_args``), the constructor's validation and the defaults of the energy formulas
(``op_counts`` receives ``option_values``). A variant's constructor takes ``Option.default`` as its keyword
default and calls ``Option.validate``.
"""
import argparse
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Tuple


def parse_bool(value, flag: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{flag} must be true or false, got {value!r}")


def positive(value, flag: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) <= 0:
        raise ValueError(f"{flag} must be a positive integer, got {value!r}")
    return int(value)


def non_negative(value, flag: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 0:
        raise ValueError(f"{flag} must be an integer >= 0, got {value!r}")
    return int(value)


def non_negative_float(value, flag: str) -> float:
    value = float(value)
    if not value >= 0.0:  # also refuses NaN
        raise ValueError(f"{flag} must be >= 0, got {value!r}")
    return value


def fraction(value, flag: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{flag} must be in [0, 1], got {value!r}")
    return value


@dataclass(frozen=True)
class Option:
    """One constructor option: keyword ``key``, command-line ``flag``, its default, help and validation."""

    key: str
    flag: str
    default: Any
    help: str
    type: Optional[Callable] = None  # argparse type of the flag
    metavar: Optional[str] = None
    choices: Optional[Tuple[str, ...]] = None
    check: Optional[Callable[[Any, str], Any]] = None  # (value, flag) -> the value to use; ValueError names flag
    aliases: Tuple[str, ...] = ()
    constructor: bool = True  # False: a flag the variant reads to derive constructor options (not one itself)
    action: Optional[str] = None  # e.g. "store_true" for a switch (then no type or metavar)

    @property
    def attr(self) -> str:
        return self.flag[2:].replace("-", "_")

    def default_for(self, args) -> Any:
        """The default when the flag was not given (a recipe may make it depend on other flags)."""
        return self.default

    def from_args(self, args) -> Any:
        value = getattr(args, self.attr, None)
        return self.default_for(args) if value is None else value

    def validate(self, value) -> Any:
        if value is None and self.default is None:  # "not set": the variant derives it (e.g. from other options)
            return value
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")
        return self.check(value, self.flag) if self.check is not None else value

    def help_text(self) -> str:
        choices = f"; choices: {', '.join(self.choices)}" if self.choices else ""
        default = "" if self.default is None or self.action else f" (default: {self.default})"
        return f"{self.help}{default}{choices}"

    def parse(self, text: str) -> Any:
        """The flag's argparse type: converted and validated, so a bad value is a command-line error saying what
        would be valid (argparse names the flag)."""
        try:
            value = self.type(text) if self.type else text
        except ValueError:
            kind = {int: "an integer", float: "a number"}.get(self.type, "a valid value")
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        try:
            return self.validate(value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).replace(f"{self.flag} ", "", 1)) from None

    def add_to(self, parser):
        if self.action:  # default None: "not given", so that from_args falls back to the declared default
            parser.add_argument(self.flag, *self.aliases, dest=self.attr, action=self.action, default=None,
                                help=self.help_text())
        else:
            parser.add_argument(self.flag, *self.aliases, dest=self.attr, type=self.parse if self.check else self.type,
                                choices=self.choices, metavar=self.metavar, help=self.help_text())


def argparse_type(check: Callable[[Any, str], Any], flag: str, name: str) -> Callable[[str], Any]:
    """An argparse ``type`` from a validator: a bad value is a command-line error saying what would be valid
    (argparse names the flag itself); ``name`` is the type's name in argparse's messages."""

    def convert(text: str):
        try:
            return check(text, flag)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).replace(f"{flag} ", "", 1)) from None

    convert.__name__ = name
    return convert


def add_options(parser, options: Iterable[Option], seen: set):
    """Add each option's flag once (variants of one family share options)."""
    for option in options:
        if option.flag not in seen:
            seen.add(option.flag)
            option.add_to(parser)


def option_values(options: Iterable[Option], given: Dict[str, Any]) -> Dict[str, Any]:
    """Every constructor option's value: ``given`` where present, the declared default elsewhere."""
    return {o.key: given.get(o.key, o.default) for o in options if o.constructor}


class DeclaredOptions:
    """The part of an attention module that its options give: flags, constructor arguments from parsed flags,
    defaults. A variant lists its options in ``options``."""

    options: Tuple[Option, ...] = ()
    # options added to a variant after checkpoints were saved: {option: the value that computes what those
    # checkpoints computed}; checkpoint metadata without the option is accepted when the model has that value
    added_options: Dict[str, object] = {}

    @classmethod
    def add_args(cls, parser, seen: Optional[set] = None):
        """Add the flags of this variant's options (each flag once across variants: ``seen``)."""
        add_options(parser, cls.options, set() if seen is None else seen)

    @classmethod
    def kwargs_from_args(cls, args, position: str) -> dict:
        """Constructor keyword arguments of this variant taken from parsed flags, for one position."""
        return {o.key: o.from_args(args) for o in cls.options if o.constructor}

    @classmethod
    def option_values(cls, given: Dict[str, object]) -> Dict[str, object]:
        """Every constructor option: ``given`` where present, else its declared default (for the costs)."""
        return option_values(cls.options, given)

    @classmethod
    def prepare_args(cls, args):
        """Fill parsed flags that this variant derives from others (e.g. E-ATT's recipe) before a model is built."""
