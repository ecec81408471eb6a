"""Word lists the task generators draw from. Each list is split 60/20/20 into train / validation /
test by a stable hash of the item (`core.split_of`), so test pairs use names, literals and
surrounding code that the other splits never show."""

VARIABLES = """
items values result data names count total line key path text parts rows cols index offset
buffer chunk header body token tokens words letters digits entries records fields options config
settings params args kwargs state status message error errors warning output source target dest
prefix suffix pattern match matches groups start end size length width height depth level limit
timeout delay interval counter score weight bias scale factor ratio price amount balance user users
group members node nodes edge edges parent child children root tree graph queue stack cache
seen visited pending queue_items results_list lines_read filename dirname basename url host port
request response payload content encoding mode flags handler callback session client server
""".split()

FUNCTIONS = """
process load save parse render compute update validate convert format_row read_config
write_report fetch_data build_index handle_event run_job check_input normalize transform
merge_items split_line collect_stats flatten resolve_path encode_value decode_value serialize
apply_patch create_user delete_user find_node sort_items filter_rows group_by count_words
load_settings dump_state make_request send_message open_session close_session init_cache
reset_counter parse_header emit_token scan_tokens walk_tree visit_node copy_file move_file
get_value set_value add_item remove_item
""".split()

WORDS = """
hello world error warning info debug name value key path file data result total count done
ready failed success start stop open close read write save load user admin guest main test
config default empty missing invalid unknown header footer title label status message
output input source target alpha beta gamma delta spam eggs foo bar baz utf-8 ascii
""".split()

CLASSES = """
Parser Reader Writer Handler Manager Config Client Server Node Tree Graph Cache Queue Stack
Buffer Record Table Report Session Request Response Worker Runner Loader Builder Visitor
Scanner Token Lexer Encoder Decoder Matrix Vector Point Shape Account Order Invoice
""".split()

# Unrelated statements placed before the line that matters. {a} {b}: variables, {f}: a function,
# {w}: a word, {n}: a number.
STATEMENTS = [
    "{a} = {n}",
    "{a} = []",
    "{a} = {{}}",
    "{a} = None",
    "{a} = {b}",
    "{a} = {f}({b})",
    "{a} = len({b})",
    "{a} += {n}",
    "{a}.append({b})",
    "{a} = {b}.get({n})",
    "{a} = [{b}] * {n}",
    "{a} = {b} or {n}",
    "{a} = {b} is not None",
    "{a} = {b}[{n}:]",
    "{a} = {b}.strip()",
    "{a} = {b}.split()",
    "{a} = max({a}, {b})",
    "{a} = sorted({b})",
    "{a} = dict({b})",
    "{a} = {b} - {n}",
    "{f}({a}, {b})",
    "{f}()",
    "# {w} {a}",
    "# TODO: {w}",
    "assert {a} is not None",
    "del {a}",
    "{a}, {b} = {b}, None",
    "{a} = {b} * {n}",
    "{a} = tuple({b})",
    "{a} = {b}.copy()",
]

HEADERS = [
    "import os\n\n",
    "import sys\n\n",
    "import re\nimport json\n\n",
    "from pathlib import Path\n\n",
    "import logging\n\nlogger = logging.getLogger(__name__)\n\n",
    '"""Helpers."""\n\n',
    "from collections import defaultdict\n\n",
    "import itertools\n\n",
    "# -*- coding: utf-8 -*-\n\n",
    "from typing import Any\n\n",
    "import math\n\n",
    "import time\n\n",
    "import argparse\n\n",
    "from dataclasses import dataclass\n\n",
    "import subprocess\n\n",
    "import shutil\nimport tempfile\n\n",
    "from functools import partial\n\n",
    "import random\n\n",
    "import csv\n\n",
    "from enum import Enum\n\n",
    "import hashlib\n\n",
    "from abc import ABC, abstractmethod\n\n",
    "import struct\n\n",
    "import threading\n\n",
    "from contextlib import contextmanager\n\n",
    "import socket\n\n",
    "import warnings\n\n",
]

POOLS = {"variables": VARIABLES, "functions": FUNCTIONS, "words": WORDS, "classes": CLASSES,
         "statements": STATEMENTS, "headers": HEADERS}
