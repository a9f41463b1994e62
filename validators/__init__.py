"""Validators: consumers of ``platform.upload.<service>`` that answer on
``platform.upload.validation``. ``loop.py`` holds the loop every validator shares; each other
module is one validator."""
