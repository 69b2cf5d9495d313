"""The CEL front end both runtimes share: syntax, the function table, what an expression
refers to, one view of the request schema, and the type checker.

    expression = parse("request.relationship.mutual_connections > 10")
    references(expression.tree)  # [Reference(path=("request", "relationship", ...), ...)]
    type_check(expression.text, condition=True)

The engines (service/policy/engines/) import this package; it imports no engine. The type
checker is Google's (checker.py), so it is imported whatever engine serves; nothing here
imports cel-python.
"""

from service.policy.cel.functions import COMPREHENSIONS, FUNCTIONS, MACROS
from service.policy.cel.memo import forget
from service.policy.cel.references import (
    Call,
    Found,
    Misuse,
    Reference,
    Tree,
    references,
)
from service.policy.cel.schema import REQUEST, RequestFields, request_fields
from service.policy.cel.syntax import (
    MAX_SYNTAX_DEPTH,
    CelSyntaxError,
    Expression,
    parse,
)
from service.policy.cel.values import (
    BUDGET_MESSAGE,
    ITERATION_BUDGET,
    EvalError,
    Value,
    json_number,
    to_json,
    type_name,
)

__all__ = [
    "BUDGET_MESSAGE",
    "COMPREHENSIONS",
    "FUNCTIONS",
    "ITERATION_BUDGET",
    "MACROS",
    "MAX_SYNTAX_DEPTH",
    "REQUEST",
    "Call",
    "CelSyntaxError",
    "EvalError",
    "Expression",
    "Found",
    "Misuse",
    "Reference",
    "RequestFields",
    "Tree",
    "Value",
    "forget",
    "json_number",
    "parse",
    "references",
    "request_fields",
    "to_json",
    "type_name",
]
