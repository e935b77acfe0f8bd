"""Imported only by the label forkserver, as its preload: the forkserver gets SIGKILL when the
process that started it dies, so a consumer killed with SIGKILL leaves no forkserver behind
(and the label workers, which follow the forkserver, none either)."""

from distribution.shipping.labels import die_with_parent

die_with_parent()
