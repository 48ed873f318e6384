"""Compatibility with the anomalib versions this plugin supports: one module per anomalib behaviour.

Every place where the plugin adapts to (or works around) something anomalib does lives here, and nowhere else.
Each fix is a module ``anomalib_surface/compat/<behaviour>.py``, named after the anomalib behaviour it handles
(not after a version), with this shape::

    \"\"\"What anomalib does, which versions are known to do it, and what the fix changes for users.\"\"\"

    def applies() -> bool:
        # Whether the imported anomalib has the behaviour, detected by behaviour (a signature, an attribute,
        # a cheap probe call) rather than by version number where possible. Must not raise.
        ...

    def install() -> None:
        # Apply the fix. Called at most once per process, only when applies() is true, right after the anomalib
        # module named in FIXES has finished executing. Idempotent.
        ...

A fix is listed in :data:`FIXES` under the anomalib module whose import it waits for; the start-up hook
(:mod:`anomalib_surface._autoload`) watches exactly those modules, so this file must import nothing.
:func:`apply_fixes` runs them fail-soft: an exception in a fix becomes one warning naming the anomalib version,
never an error in anomalib's own import.
"""

FIXES: dict[str, tuple[str, ...]] = {}
"""anomalib module -> the compat modules (``anomalib_surface.compat.<name>``) to run once it is imported."""
