-- Redis's clock on the node that holds a queue (in a cluster, each node has
-- its own; a queue's ready scores and lease deadlines come from its node's).
-- KEYS[1]  any key of the queue: it only routes the call to that node
-- Returns TIME: {seconds, microseconds}.
return redis.call('TIME')
