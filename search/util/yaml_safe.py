"""Reading YAML that users hand to hpsearch (best.yaml and exports): safe types only, and no
anchors or aliases, so a small file cannot expand to gigabytes in memory."""

from __future__ import annotations

import yaml


class AliasRefused(yaml.composer.ComposerError):
    pass


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: a few hundred bytes of nested aliases expand to
    gigabytes (a "billion laughs"), and hpsearch's own files never use them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise AliasRefused(None, None, "not valid here: YAML aliases (*name) are refused", event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str):
    return yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader that also refuses aliases
