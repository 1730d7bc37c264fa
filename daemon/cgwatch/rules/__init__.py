"""Rules: YAML rule files, the expression language, and the engine that evaluates them.

The expression compiler is :mod:`cgwatch.rules.expr` (``compile_expr``), built from
:mod:`~cgwatch.rules.lexer` (tokens, ``ExprError``), :mod:`~cgwatch.rules.parser` (text to
a checked :mod:`~cgwatch.rules.tree`), :mod:`~cgwatch.rules.windows` (``avg(m, 5m)`` and
friends) and :mod:`~cgwatch.rules.context` (what an evaluation reads).
"""
