# Receives BENCH_COUNT NetControl::catch_release_encountered events on
# zeek.cluster.manager (or stops after 20 s without one) and prints, in the form
# bench/bus_flood.rs prints it, the events per second and the one-way latency from each
# event's network-timestamp metadata (its send time) to its handler.
@load ./common

module Bench;

global total = to_count(getenv("BENCH_COUNT"));
global got = 0;
global first: time;
global last: time;
global lat: vector of double;
global watchdog: event(seen: count);

event zeek_init()
	{
	Cluster::subscribe("zeek.cluster.manager");
	print "ready";
	flush_all();
	schedule 1sec { Bench::watchdog(0) };
	}

function quantile(v: vector of double, q: double): double
	{
	if ( |v| == 0 )
		return 0.0;
	local i = double_to_count(floor(|v| * q));
	if ( i >= |v| )
		i = |v| - 1;
	return v[i];
	}

function report()
	{
	local s = sort(lat, function(a: double, b: double): int { return a < b ? -1 : (a > b ? 1 : 0); });
	local secs = got > 0 ? interval_to_double(last - first) : 0.0;
	print fmt("received %d of %d in %.3f s: %.0f events/s; latency ms p50 %.3f p99 %.3f max %.3f",
	          got, total, secs, got / (secs > 0.0 ? secs : 1e-9),
	          quantile(s, 0.5) * 1e3, quantile(s, 0.99) * 1e3, quantile(s, 1.0) * 1e3);
	terminate();
	}

event watchdog(seen: count)
	{
	if ( got == total )
		return;
	if ( got > 0 && ( got == seen || current_time() - first > 120sec ) )
		{
		report();
		return;
		}
	schedule 20sec { Bench::watchdog(got) };
	}

event NetControl::catch_release_encountered(a: addr)
	{
	local now = current_time();
	if ( got == 0 )
		first = now;
	last = now;
	++got;
	local ts = EventMetadata::current(EventMetadata::NETWORK_TIMESTAMP);
	if ( |ts| > 0 )
		lat += interval_to_double(now - (ts[0] as time));
	if ( got == total )
		report();
	}
