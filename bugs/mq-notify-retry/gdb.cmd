# From netlink_remove()'s warning back to the put that should not have happened (bugs.sh runs
# this against `krr replay --gdb` of the recording).
break __warn
continue
printf "WARNING at %s:%d\n", file, line
delete
# The close of the last descriptor: which socket it released.
break netlink_release
reverse-continue
set $sk = (unsigned long)sock->sk
printf "netlink_release of socket %#lx (refcount %d)\n", $sk, ((struct sock *)$sk)->__sk_common.skc_refcnt.refs.counter
bt 4
delete
# mq_notify's error path: the descriptor was closed while netlink_attachskb() slept.
break netlink_detachskb
reverse-continue
bt 4
set $refs = sk->__sk_common.skc_refcnt.refs.counter
if (unsigned long)sk == $sk && $_any_caller_is("do_mq_notify", 2)
  printf "the extra put: do_mq_notify()'s error path called netlink_detachskb() on socket %#lx (refcount %d: the open socket's and the hash table's) after the retry found the descriptor closed\n", $sk, $refs
else
  printf "the last netlink_detachskb before the warning was for %#lx, not %#lx\n", (unsigned long)sk, $sk
end
