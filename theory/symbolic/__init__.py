"""The paper's derivations in sympy: definitions, Proposition 2.1, Theorem 3.1 and 4.1 steps, symbolically.

Owns: ``symbols`` (the shared sympy symbols), ``derivations`` (Theorem 3.1, Lemma D.1/D.2 and the
Theorem 4.3 rates checked symbolically), ``instability`` (Definitions 2.2 / 4.1 on closed-form maps).

May import: the top-level ``theory`` modules. Nothing numeric depends on it.
"""
