"""`erm`: empirical risk minimisation, the baseline every other method is compared with."""
from ..loop import Hooks
from . import Recipe, register

register(Recipe("erm", "plain cross-entropy training (the reference model)", "Vapnik, empirical risk minimisation", lambda hp: Hooks()))
