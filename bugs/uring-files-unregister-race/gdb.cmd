# From KASAN's report in the io_uring read back to the free of its file and to the other task's
# unregister of the fixed-file table (bugs.sh runs this against `krr replay --gdb` of the
# recording).
break kasan_report
continue
printf "KASAN report: %lu bytes at %#lx, is_write %d\n", size, addr, is_write
set $bad = addr
set $reporter = (*(struct task_struct **)($gs_base + (unsigned long)&current_task))->pid
bt 6
delete
# The file's memory went back to its cache in an RCU callback (the other registered file went
# the same way: stop at the one that holds the bad address).
set $rcu = (unsigned long)&((struct file *)0)->f_rcuhead
break file_free_rcu if $bad - ((unsigned long)head - $rcu) < sizeof(struct file)
reverse-continue
set $file = (unsigned long)head - $rcu
printf "file_free_rcu of %#lx\n", $file
delete
# Its last reference was the table's, put by the unregister of the fixed files.
break __io_sqe_files_unregister
reverse-continue
set $unregisterer = (*(struct task_struct **)($gs_base + (unsigned long)&current_task))->pid
bt 4
if $bad >= $file && $bad < $file + sizeof(struct file) && $unregisterer != $reporter
  printf "the read used a struct file freed after task %d's IORING_UNREGISTER_FILES put it (not the reporting task %d): the bad address is %ld bytes into that %lu-byte file\n", $unregisterer, $reporter, $bad - $file, sizeof(struct file)
else
  printf "no match: bad %#lx, freed file %#lx, unregister by task %d, report in task %d\n", $bad, $file, $unregisterer, $reporter
end
