# From KASAN's report back to the class whose maximum packet length came from the MTU (bugs.sh
# runs this against `krr replay --gdb` of the recording).
break kasan_report
continue
printf "KASAN report: %lu bytes at %#lx, is_write %d\n", size, addr, is_write
set $bad = addr
bt 6
delete
# The class was created without TCA_QFQ_LMAX: qfq_change_class() used psched_mtu(lo).
break qfq_change_class
reverse-continue
set $q = (unsigned long)&sch->privdata
set $mtu = sch->dev_queue->dev->mtu
set $hh = sch->dev_queue->dev->hard_header_len
bt 4
printf "class %x:%x took lmax = MTU %u + header %u = %u > 65536; the bad access is %ld bytes past the end of its qdisc's %lu-byte qfq_sched\n", classid >> 16, classid & 0xffff, $mtu, $hh, $mtu + $hh, $bad - ($q + sizeof(struct qfq_sched)), sizeof(struct qfq_sched)
