"""A scikit-learn compatible ``get_params``/``set_params`` for triggers and initializers.

Triggers and initializers are passed to estimators as parameters, so they must survive
``sklearn.base.clone`` (which rebuilds any object with ``get_params`` from its constructor
arguments) and ``GridSearchCV``'s nested ``strategy__gamma`` style parameters. The growth
engine must not import scikit-learn, hence this small mixin instead of ``BaseEstimator``.
"""

import inspect


class ParamsMixin:
    """Constructor arguments as parameters, the scikit-learn way.

    Subclasses store every ``__init__`` argument unchanged under the same attribute name.
    State learned during training lives in attributes that end with an underscore and is
    not part of the parameters.
    """

    @classmethod
    def _param_names(cls):
        signature = inspect.signature(cls.__init__)
        return sorted(
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    def get_params(self, deep=True):
        params = {}
        for name in self._param_names():
            value = getattr(self, name)
            params[name] = value
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                for sub_name, sub_value in value.get_params(deep=True).items():
                    params[f"{name}__{sub_name}"] = sub_value
        return params

    def set_params(self, **params):
        valid = self._param_names()
        nested = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for {type(self).__name__}. "
                    f"Valid parameters are: {valid!r}."
                )
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self):
        defaults = {
            name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()
        }
        args = ", ".join(
            f"{name}={value!r}"
            for name, value in self.get_params(deep=False).items()
            if not _same(value, defaults.get(name, inspect.Parameter.empty))
        )
        return f"{type(self).__name__}({args})"


def _same(a, b):
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # e.g. arrays: show them
        return False
