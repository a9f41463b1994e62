"""The malformed-input corpus (issue 6, item 10), as generators: ``http.cases()`` yields
raw HTTP requests, ``messages.verdicts()``, ``messages.announcements()`` and
``messages.events()`` yield raw bus message values. Each case has a stable name, so a
failure names the input; ``python -m tests.security.corpus DIR`` writes them all to files.
"""
