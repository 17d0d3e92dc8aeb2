# From KASAN's report in the timer softirq back to the close of the socket whose TPACKET_V3 timer
# was still armed, and to the version switch that made the close skip it (bugs.sh runs this
# against `krr replay --gdb` of the recording).
break kasan_report
continue
printf "KASAN report: %lu bytes at %#lx, is_write %d\n", size, addr, is_write
set $bad = addr
bt 6
delete
# The trigger closed the socket right after the ring went in as V1.
break packet_release
reverse-continue
set $po = (struct packet_sock *)sock->sk
set $timer = (unsigned long)&$po->rx_ring.prb_bdqc.retire_blk_timer
set $version = $po->tp_version + 1
bt 4
delete
# The last write to the socket's version before that close: the second thread's PACKET_VERSION.
watch -l $po->tp_version
reverse-continue
bt 3
set $switcher = (*(struct task_struct **)($gs_base + (unsigned long)&current_task))->pid
if $bad >= $timer && $bad < $timer + sizeof(struct timer_list) && $_any_caller_is("packet_setsockopt", 1)
  printf "the V3 retire timer outlived its socket: the bad address is %ld bytes into the timer, in the %lu-byte packet socket that packet_release closed as TPACKET_V%d; task %d had switched it to V1 in packet_setsockopt\n", $bad - $timer, sizeof(struct packet_sock), $version, $switcher
else
  printf "no match: bad %#lx, timer %#lx, version at close V%d, last version write by task %d\n", $bad, $timer, $version, $switcher
end
