# From KASAN's report back to the free of DLCI 0, done by the other reconfiguring task (bugs.sh
# runs this against `krr replay --gdb` of the recording).
break kasan_report
continue
printf "KASAN report: %lu bytes at %#lx, is_write %d\n", size, addr, is_write
set $bad = addr
set $reporter = (*(struct task_struct **)($gs_base + (unsigned long)&current_task))->pid
bt 6
delete
# The task that took the mutex first released DLCI 0 while the reporter slept on the mutex.
break gsm_dlci_free
reverse-continue
set $dlci = (unsigned long)port - (unsigned long)&((struct gsm_dlci *)0)->port
set $freer = (*(struct task_struct **)($gs_base + (unsigned long)&current_task))->pid
bt 8
if $bad >= $dlci && $bad < $dlci + sizeof(struct gsm_dlci) && $freer != $reporter
  printf "freed before the report by gsm_dlci_free in task %d, not the reporting task %d: the bad address is %ld bytes into that %lu-byte DLCI\n", $freer, $reporter, $bad - $dlci, sizeof(struct gsm_dlci)
else
  printf "the last gsm_dlci_free before the report (task %d) freed %#lx; the report (task %d) is at %#lx\n", $freer, $dlci, $reporter, $bad
end
