"""The ``wanr2v`` command: single tasks, durable batches, the emulator and the demo.

Every command talks to one service (``--base-url`` / ``--region``, else
``DASHSCOPE_HTTP_BASE_URL`` / ``DASHSCOPE_REGION``, else beijing) with the key in
``DASHSCOPE_API_KEY``; the key is never printed (every line written is scrubbed of it).
``--json`` turns the human output into one JSON document on stdout. Progress bars
(rich, the ``cli`` extra) are drawn only when stdout is a terminal; otherwise progress
is one plain line per change, and without rich everything degrades to plain text.
Each command runs in one ``anyio.run``; files are read and written off the event loop.

The package, each module importing only those below it:

- ``_main``: `main`, the signals and the errors that end a command;
- ``_parser``: the argument parser, binding each subcommand to its command function;
- ``_serve`` (``emulator``, ``demo``), ``_run`` (``run``, ``resume``, ``journal
  show``), ``_commands`` (the single-task commands): one function per command;
- ``_context``: what a command runs with (options, output, key, client, logging);
- ``_output``: the renderer, the ``--json`` shapes and the exit codes.

The batch-file format is the library's (``wanr2v._batchfile``), and so are the
journal's rules; the CLI calls them.
"""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
