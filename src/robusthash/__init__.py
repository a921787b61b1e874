"""robusthash: adversarial robustness of deep-hashing image retrieval.

Train hashing models, attack them (PgA and the baselines the papers compare), defend them (CgAT and its
baselines) and report retrieval quality under attack. The two papers that specify the methods are cited by
equation number in the docstrings: "PgA eq. (n)" and "CgAT eq. (n)".
"""

from robusthash.errors import UserError

__version__ = "0.1.0"

__all__ = ["UserError", "__version__"]
