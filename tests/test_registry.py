import pytest

from pulmo.errors import ConfigError
from pulmo.registry import Registry


def test_register_and_get():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)

    @reg.register("b")
    def b() -> int:
        return 2

    assert reg.get("a") == 1 and reg.get("b")() == 2
    assert reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2


def test_duplicate_name_raises():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)


def test_unknown_name_lists_known():
    reg: Registry[int] = Registry("thing")
    reg.add("alpha", 1)
    with pytest.raises(ConfigError, match="unknown thing 'beta'; known: alpha"):
        reg.get("beta")
