package queue

// MaxReceiveCount is the event queue's redrive maxReceiveCount in
// template.yaml, and SQS's largest. It is a last-resort net: the dispatcher
// dead-letters a failing event by its age (RETRY_FOR) long before SQS
// counts this many receives (dispatcher.MaxRetryFor says how long before),
// and the in-process queue of `make dev` and the tests applies the same
// number.
const MaxReceiveCount = 1000
