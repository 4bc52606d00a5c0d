"""The original's block manager as an ExaBGP process, for bench/bgp.sh: bhr-client's own
BlockManager (the real package from PyPI) with a blocker that writes what bhr-client-exabgp
writes, one `announce attributes ... nlri` line per batch of BHR_EXABGP_BATCH_SIZE (50)
networks, IPv4 and IPv6 apart. Like the original it does not read ExaBGP's answers (run
ExaBGP with exabgp.api.ack=false) and acknowledges a batch once it is written.
"""

import os
import sys

from bhr_client.block_manager import BlockManager
from bhr_client.rest import login_from_env

BATCH = int(os.getenv("BHR_EXABGP_BATCH_SIZE", "50"))


class ExaBgpBlocker:
    def lines(self, verb, attrs, cidrs):
        for v6 in (False, True):
            fam = [c for c in cidrs if (":" in c) == v6]
            for i in range(0, len(fam), BATCH):
                sys.stdout.write("%s attributes %s nlri %s\n" % (verb, attrs, " ".join(fam[i:i + BATCH])))
        sys.stdout.flush()

    def block_many(self, records):
        self.lines("announce", "next-hop self community [65535:666]", [r["cidr"] for r in records])

    def unblock_many(self, records):
        self.lines("withdraw", "next-hop self", [r["block"]["cidr"] for r in records])


BlockManager(login_from_env(), ExaBgpBlocker()).run()
