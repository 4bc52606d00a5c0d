##! catchd's catch-and-release of networks (``[cnr.networks]`` in catchd):
##! the events a catchd manager publishes on ``catchd.catch_release`` about the
##! networks it tracks. Not loaded by ``@load catchd``: load ``catchd/networks``
##! where these events are handled, and on a Zeek node that serves the
##! WebSocket API to a catchd manager with networks on (Zeek makes only events
##! it knows). It needs Zeek's catch-and-release for ``BlockInfo`` and the
##! actions.

@load policy/frameworks/netcontrol/catch-and-release

module Catchd;

export {
	## One line of catchd's ``netcontrol_catch_release_net.log``: the fields
	## of :zeek:see:`NetControl::CatchReleaseInfo` with the network in place
	## of the address (the log's ``subnet`` column; ``subnet`` is a keyword of
	## Zeek's language, so the field is ``net``).
	type CatchReleaseNetInfo: record {
		ts: time;
		rule_id: string &optional;
		net: subnet;
		action: NetControl::CatchReleaseActions;
		block_interval: interval &optional;
		watch_interval: interval &optional;
		blocked_until: time &optional;
		watched_until: time &optional;
		num_blocked: count &optional;
		location: string &optional;
		message: string &optional;
		plugin: string &optional;
	};

	## A network is tracked with this state (dropped, adopted or re-dropped).
	global net_block_new: event(n: subnet, bi: NetControl::BlockInfo);

	## A network was unblocked and is no longer tracked.
	global net_block_delete: event(n: subnet);

	## A network's watch ended: it is no longer tracked.
	global net_forgotten: event(n: subnet, bi: NetControl::BlockInfo);

	## Each line of ``netcontrol_catch_release_net.log``.
	global log_catch_release_net: event(rec: CatchReleaseNetInfo);
}
