"""THE directory rule (arqond/system/dirs.py exposure): who besides arqond's user and root could
replace its files in a directory of a given mode and owner, and the mode that stops them."""

from __future__ import annotations

import pytest

from arqond.system.dirs import Exposure, exposure

US = 998       # arqond's user
OTHER = 1000   # a Zgent's user

TABLE = [
    # mode, owner, us, shared (moo.log_dir), what is wrong or None
    # The packaged modes: /var/moo 2755 and /var/log/moo 3775, owned by arqond.
    (0o2755, US, US, False, None),
    (0o3775, US, US, True, None),
    (0o750, US, US, False, None),                       # StateDirectoryMode=0750
    # make run: arqond is root and root owns them; root-owned dirs are safe for any arqond.
    (0o2755, 0, 0, False, None),
    (0o3775, 0, US, True, None),
    (0o1777, 0, US, True, None),                         # /tmp-like: sticky is enough there
    # The old /var/moo: members could delete, rename and squat names.
    (0o2775, US, US, False, Exposure(("group-writable",), 0o2755, False)),
    (0o777, 0, 0, False, Exposure(("group- and world-writable",), 0o755, False)),
    (0o757, US, US, False, Exposure(("world-writable",), 0o755, False)),
    # Sticky is not enough where arqond creates names: the rule wants no writers at all.
    (0o3775, US, US, False, Exposure(("group-writable",), 0o3755, False)),
    (0o1777, 0, US, False, Exposure(("group- and world-writable",), 0o1755, False)),
    # The log dir: writable by the Zgents by design, sticky so that files stay their owners'.
    (0o2775, US, US, True, Exposure(("group-writable without the sticky bit",), 0o3775, False)),
    (0o777, US, US, True, Exposure(("group- and world-writable without the sticky bit",),
                                   0o1777, False)),
    (0o755, US, US, True, None),                         # private is safe too
    # Owned by another user: it can change the mode at will, whatever the mode is now.
    (0o755, OTHER, US, False, Exposure(("owned by another user",), 0o755, True)),
    (0o3775, OTHER, 0, True, Exposure(("owned by another user",), 0o3775, True)),
    (0o2775, OTHER, US, False, Exposure(("owned by another user", "group-writable"), 0o2755,
                                       True)),
    # The file type bits of st_mode are ignored.
    (0o40755, US, US, False, None),
    (0o42775, US, US, False, Exposure(("group-writable",), 0o2755, False)),
]


@pytest.mark.parametrize("mode, owner, us, shared, expected", TABLE)
def test_who_could_replace_arqonds_files_in_a_directory(mode, owner, us, shared, expected):
    assert exposure(mode, owner, us, shared) == expected
