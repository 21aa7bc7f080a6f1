"""Student (and teacher) network families: one registry, one file per family.

Importing this package registers every built-in family. A new family is one module here
(imported below) plus one `search_spaces/<family>.yaml`; the tests pick it up from the registry.
"""

from raydistill.students import (  # noqa: F401  (registers the families)
    adder,
    airbench_teacher,
    allconv,
    cnn,
    mlp,
    nin,
    resnet_teacher,
    vgg_teacher,
)
from raydistill.students.registry import (
    Family,
    build,
    check_spec,
    complete_spec,
    data_spec_keys,
    families,
    get_family,
    has_conv,
    register_family,
)

__all__ = [
    "Family",
    "build",
    "check_spec",
    "complete_spec",
    "data_spec_keys",
    "families",
    "get_family",
    "has_conv",
    "register_family",
]
