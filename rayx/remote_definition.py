"""What remote functions and actor classes share: options, export to the GCS
function table, and pickling without this process's runtime state."""
from rayx import options as opts
from rayx.runtime import serialization


class RemoteDefinition:
    """Base of RemoteFunction and ActorClass. Subclasses set ``_definition`` (the
    function or class), ``_name``, ``_kind`` ("task" or "actor") and implement
    ``_remote(args, kwargs, options)``."""

    _kind = "task"

    def _init_definition(self, definition, name, options):
        self._definition = definition
        self._name = name
        self._options = opts.validate(options, self._kind)
        self._blob = None
        self._function_id = None
        self._exported_to = None

    def remote(self, *args, **kwargs):
        return self._remote(args, kwargs, self._options)

    def options(self, **options):
        """The same definition with some options overridden, for ``.remote()`` calls."""
        merged = dict(self._options)
        merged.update(opts.validate_override(options, self._kind))
        definition = self

        class WithOptions:
            def remote(self, *args, **kwargs):
                return definition._remote(args, kwargs, merged)

            def options(self, **more):
                return definition.options(**dict(merged, **more))

        return WithOptions()

    def __getstate__(self):
        # Captured by other remote code: carry the definition, not this process's runtime state.
        state = dict(self.__dict__)
        state.update(_blob=None, _function_id=None, _exported_to=None)
        state.pop("_fields_cache", None)
        return state

    def _export(self, core):
        """Pickle the definition once and store it in the GCS function table; its id."""
        if self._exported_to is not core:
            if self._blob is None:
                try:
                    self._blob = serialization.dumps_function(self._definition)
                except Exception as exc:
                    what = "remote function" if self._kind == "task" else "actor class"
                    raise TypeError(f"Could not pickle the {what} {self._name}: {exc}") from exc
            self._function_id = core.functions.export(self._blob)
            self._exported_to = core
        return self._function_id
