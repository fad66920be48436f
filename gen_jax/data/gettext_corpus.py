"""A parallel corpus from the gettext catalogs a Linux system has installed.

`share/locale/<lang>/LC_MESSAGES/<domain>.mo` holds human translations of one
program's messages (the same kind of text as the OPUS GNOME / KDE / Ubuntu
corpora). A pair is (English msgid, translated msgstr), read with the
standard library's `gettext` parser. Cleaning, the same on both sides:

  * the header entry, empty translations and catalogs that do not decode are
    skipped; a message's context (msgctxt) is dropped; of a plural entry the
    singular pair is kept (msgid, msgstr[0]);
  * `iso_*` catalogs (ISO code tables: names of languages, countries,
    currencies) are left out: they are lists of names, not messages;
  * keyboard mnemonics are removed ('_Open' / 'Ö_ffnen' -> 'Open' /
    'Öffnen'; '&Save'), whitespace runs (newlines included) become one space;
  * formatting placeholders become numbered tokens '{1}', '{2}', ... in the
    order of the source: printf ('%s', '%-5d', '%lu', positional '%2$s'),
    Python ('%(name)s', '{0}', '{name}', '{}') and Qt ('%1'). A positional
    '%2$s' in the translation is argument 2; a named one is matched by its
    text. A pair whose two sides do not use the same placeholders, or a
    printf argument of another type, is dropped (a broken translation);
    '%%' reads '%'.

Split, fixed and machine-independent: a catalog is held out iff the SHA-256
of its domain name is 0 mod `HELD_OUT_MOD`, so a program's messages are all
in train or all held out. Deduplicated: each split keeps one pair per source
sentence (the first in sorted catalog order), and a held-out source that
also occurs in train is dropped (the model has seen it).
"""

import gettext
import hashlib
import os
import re
import sys

from absl import logging

HELD_OUT_MOD = 8
# Where distributions install catalogs, searched in order.
PREFIXES = (sys.prefix, "/usr", "/usr/local")
_SKIP_PREFIX = "iso_"

# Flags without the space flag: '100% complete' is text, not '% c'.
_PRINTF = (r"%(?:(?P<pos>\d+)\$)?[-+#0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?"
           r"(?:hh|h|ll|l|L|q|j|z|t|I64|I32|I)?[diouxXeEfFgGaAcspn]")
_PLACEHOLDER = re.compile(
    r"(?P<percent>%%)"
    r"|(?P<named>%\([A-Za-z_][A-Za-z0-9_]*\)[-+ #0]*\d*(?:\.\d+)?[a-zA-Z])"
    r"|(?P<printf>" + _PRINTF + r")"
    r"|(?P<qt>%[1-9]\d?)"
    r"|(?P<brace>\{[A-Za-z0-9_]*\})")
_MNEMONIC_SOURCE = re.compile(r"(?:(?<=\s)|^)[_&](?=\w)")
_MNEMONIC_ANY = re.compile(r"[_&](?=\w)")
_SPACE = re.compile(r"\s+")


def catalog_dir(language: str) -> str | None:
  """The first LC_MESSAGES directory of `language` that has catalogs."""
  for prefix in PREFIXES:
    path = os.path.join(prefix, "share", "locale", language, "LC_MESSAGES")
    if os.path.isdir(path) and any(n.endswith(".mo") for n in os.listdir(path)):
      return path
  return None


def is_held_out(domain: str) -> bool:
  digest = hashlib.sha256(domain.encode("utf-8")).hexdigest()
  return int(digest[:8], 16) % HELD_OUT_MOD == 0


def read_catalog(path: str) -> list[tuple[str, str]]:
  """(msgid, msgstr) of one .mo file; [] if it does not parse or decode."""
  try:
    with open(path, "rb") as f:
      catalog = gettext.GNUTranslations(f)._catalog  # pylint: disable=protected-access
  except (OSError, UnicodeDecodeError, ValueError) as e:
    logging.debug("Skipping catalog %s: %s", path, e)
    return []
  pairs = []
  for key, value in catalog.items():
    if isinstance(key, tuple):  # plural forms: keep the singular one
      if key[1] != 0:
        continue
      key = key[0]
    key = key.split("\x04", 1)[-1]  # drop the context
    if key and value:
      pairs.append((key, value))
  return sorted(pairs)


def _strip_mnemonic(source: str, target: str) -> tuple[str, str]:
  """Removes one keyboard mnemonic marker from each side when the source
  has exactly one (the translation may put it mid-word)."""
  if len(_MNEMONIC_SOURCE.findall(source)) != 1:
    return source, target
  source = _MNEMONIC_SOURCE.sub("", source, count=1)
  if len(_MNEMONIC_ANY.findall(target)) == 1:
    target = _MNEMONIC_ANY.sub("", target, count=1)
  return source, target


def normalize_placeholders(source: str, target: str | None = None
                           ) -> tuple[str, str | None, list[str]] | None:
  """Numbers the placeholders of a pair (see the module docstring).

  Returns:
    (source, target, the source's placeholder texts by number - 1), with the
    target None when not given; None when the two sides disagree.
  """
  texts: list[str] = []
  numbers: dict[str, int] = {}  # named / brace / Qt placeholder -> number
  # printf arguments: argument index (the k-th non-positional one is
  # argument k, '%n$' is argument n) -> (number, conversion).
  arguments: dict[int, tuple[int, str]] = {}

  def new_number(text):
    texts.append(text)
    return len(texts)

  def printf_argument(m, ordinal):
    """The argument index of a printf match (ordinal: non-positional ones
    so far on this side, a one-element list)."""
    if m.group("pos"):
      return int(m.group("pos"))
    ordinal[0] += 1
    return ordinal[0]

  source_ordinal = [0]

  def source_sub(m):
    if m.group("percent"):
      return "%"
    text = m.group(0)
    if m.group("printf"):
      arg = printf_argument(m, source_ordinal)
      if arg not in arguments:
        arguments[arg] = (new_number(text), text[-1])
      return "{%d}" % arguments[arg][0]
    if text not in numbers:
      numbers[text] = new_number(text)
    return "{%d}" % numbers[text]

  new_source = _PLACEHOLDER.sub(source_sub, source)
  if target is None:
    return new_source, None, texts
  used: list[int] = []
  target_ordinal = [0]

  def target_sub(m):
    if m.group("percent"):
      return "%"
    text = m.group(0)
    if m.group("printf"):
      number, kind = arguments.get(printf_argument(m, target_ordinal),
                                   (-1, ""))
      if kind != text[-1]:
        number = -1  # another type than the source's: a broken translation
    else:
      number = numbers.get(text, -1)
    used.append(number)
    return "{%d}" % number

  new_target = _PLACEHOLDER.sub(target_sub, target)
  source_numbers = sorted(int(n) for n in re.findall(r"\{(\d+)\}", new_source))
  if sorted(used) != source_numbers:
    return None
  return new_source, new_target, texts


def restore_placeholders(text: str, placeholders: list[str]) -> str:
  """'{k}' -> the k-th placeholder of the source, for showing a translation."""
  def sub(m):
    k = int(m.group(1))
    return placeholders[k - 1] if 0 < k <= len(placeholders) else m.group(0)
  return re.sub(r"\{(\d+)\}", sub, text)


def clean_pair(source: str, target: str) -> tuple[str, str] | None:
  """One catalog pair, cleaned (None: dropped)."""
  source, target = _strip_mnemonic(source, target)
  source = _SPACE.sub(" ", source).strip()
  target = _SPACE.sub(" ", target).strip()
  if not source or not target:
    return None
  normalized = normalize_placeholders(source, target)
  if normalized is None:
    return None
  return normalized[0], normalized[1]


def clean_source(text: str) -> tuple[str, list[str]]:
  """A typed sentence cleaned as training sources were; and its
  placeholders (to put back into the translation)."""
  text = _SPACE.sub(" ", text).strip()
  new, _, placeholders = normalize_placeholders(text)
  return new, placeholders


def load(language: str) -> tuple[list[tuple[str, str]],
                                  list[tuple[str, str]], str] | None:
  """(train pairs, held-out pairs, description) of English -> `language`,
  or None when the system has no catalogs for it."""
  directory = catalog_dir(language)
  if directory is None:
    return None
  splits: dict[bool, dict[str, str]] = {False: {}, True: {}}
  domains = {False: 0, True: 0}
  for name in sorted(os.listdir(directory)):
    domain = name[:-3]
    if not name.endswith(".mo") or domain.startswith(_SKIP_PREFIX):
      continue
    pairs = read_catalog(os.path.join(directory, name))
    held = is_held_out(domain)
    domains[held] += bool(pairs)
    for source, target in pairs:
      cleaned = clean_pair(source, target)
      if cleaned is not None:
        splits[held].setdefault(cleaned[0], cleaned[1])
  train = sorted(splits[False].items())
  held_out = sorted((s, t) for s, t in splits[True].items()
                    if s not in splits[False])
  description = (f"gettext catalogs in {directory} (en-{language}: "
                 f"{domains[False]} catalogs / {len(train)} pairs train, "
                 f"{domains[True]} catalogs / {len(held_out)} pairs held out)")
  return train, held_out, description
