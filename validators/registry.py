"""The built-in checks by name (import-light: nothing is loaded until a check is built)."""

# check name -> "module:factory"; factories take the settings and return a Check
CHECKS = {
    "test": "validators.testareno:from_settings",
    "archive": "validators.archive:from_settings",
    "mime": "validators.mimecheck:from_settings",
    "obj": "validators.objcheck:from_settings",
}
DEFAULT_VALIDATORS = "testareno:test,assets:obj"
