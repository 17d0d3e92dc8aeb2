# From KASAN's report back to the free of the struct file that close() reads (bugs.sh runs this
# against `krr replay --gdb` of the recording).
break kasan_report
continue
printf "KASAN report: %lu bytes at %#lx, is_write %d\n", size, addr, is_write
set $bad = addr
bt 6
delete
# Closing the filesystem context kfree()d its "source", which was the file.
break put_fs_context
reverse-continue
set $src = (unsigned long)fc->source
bt 6
if $bad >= $src && $bad < $src + sizeof(struct file)
  printf "freed before the report by put_fs_context: the bad address is %ld bytes into the %lu-byte struct file fc->source pointed at\n", $bad - $src, sizeof(struct file)
else
  printf "the last put_fs_context before the report freed %#lx, which does not hold %#lx\n", $src, $bad
end
