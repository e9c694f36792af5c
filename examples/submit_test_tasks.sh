#!/usr/bin/env bash
# Submit one task of every kind the seed's examples/test-tasks/submit_test_tasks.sh
# had, through the dtq CLI: each example type at each priority, a scheduled task,
# a task that fails once and is retried, tasks that end dead-lettered (retries
# exhausted, a permanent error, a timeout), an idempotent resubmission and a task
# of a type no worker handles. The types are the built-in example handlers
# (dtq/examples.py), which `dtq dev` and a plain `dtq worker` run.
#
# Usage:
#   examples/submit_test_tasks.sh          submit, print the task ids
#   examples/submit_test_tasks.sh --wait   then follow every task to its end and
#                                          check it ended as expected (exit 1 if not)
# Environment:
#   DTQ_SERVER_ADDRESS  the API server (default 127.0.0.1:50051)
#   DTQ                 the dtq command (default: dtq)
#   SCHEDULE_IN         seconds until the scheduled task runs (default 30)
set -euo pipefail

DTQ="${DTQ:-dtq}"
SCHEDULE_IN="${SCHEDULE_IN:-30}"
WAIT=0
case "${1:-}" in
    --wait) WAIT=1 ;;
    "") ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--wait]" >&2; exit 2 ;;
esac

ids=()
expected=()
descriptions=()

# submit_task DESCRIPTION EXPECTED_END_STATE TYPE PAYLOAD [dtq task submit options...]
submit_task() {
    local description=$1 expect=$2 id
    shift 2
    echo "Submitting $description..."
    id=$($DTQ task submit "$@" --quiet)
    echo "  task $id (expected to end $expect)"
    ids+=("$id")
    expected+=("$expect")
    descriptions+=("$description")
}

echo "=== Test Task Examples ==="
submit_task "Quick test task" completed \
    test_task '{"message":"Hello World","sleep_duration":2}' --priority=high
submit_task "Medium priority task" completed \
    test_task '{"message":"Background processing","sleep_duration":5}' --priority=medium
submit_task "Low priority task" completed \
    test_task '{"message":"Low priority task","sleep_duration":1}' --priority=low

echo "=== Image Processing Examples ==="
submit_task "Image processing task" completed image_processing \
    '{"image_url":"https://example.com/image.jpg","operations":["resize","watermark"],"output_format":"png"}' \
    --priority=high --timeout=300
submit_task "Batch image processing" completed image_processing \
    '{"images":["img1.jpg","img2.jpg","img3.jpg"],"resize":{"width":800,"height":600},"quality":85}' \
    --priority=medium

echo "=== Email Sending Examples ==="
submit_task "Welcome email" completed email_sending \
    '{"recipient":"user@example.com","subject":"Welcome!","template":"welcome_email","data":{"name":"John Doe"}}' \
    --priority=medium
submit_task "Newsletter campaign" completed email_sending \
    '{"recipients":["user1@example.com","user2@example.com"],"subject":"Newsletter","template":"newsletter","campaign_id":"newsletter_2024_01"}' \
    --priority=low

echo "=== Data ETL Examples ==="
submit_task "User data ETL" completed data_etl \
    '{"source":"users.csv","destination":"postgres://users_table","transformations":["validate_emails","normalize_names"],"batch_size":1000}' \
    --priority=low --max-retries=5
submit_task "Real-time analytics ETL" completed data_etl \
    '{"source":"api://analytics/events","destination":"warehouse://events","window":"1h","aggregations":["count","sum","avg"]}' \
    --priority=high

echo "=== Scheduled Task Examples ==="
future=$(date -u -d "+${SCHEDULE_IN} seconds" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null ||
    date -u -v+"${SCHEDULE_IN}"S +%Y-%m-%dT%H:%M:%SZ)
echo "Scheduled for $future"
submit_task "Scheduled task" completed \
    test_task '{"message":"Scheduled task","sleep_duration":1}' --priority=medium --scheduled-at="$future"

echo "=== Retry, Timeout and Dead Letter Examples ==="
submit_task "Task that fails once, then succeeds on retry" completed \
    test_task '{"message":"flaky","fail_times":1}' --max-retries=2
submit_task "Task that always fails (retries exhausted)" dead_lettered \
    test_task '{"fail":true,"error":"always fails"}' --max-retries=1
submit_task "Task with a permanent error (no retries)" dead_lettered \
    test_task '{"fail":true,"permanent":true,"error":"bad input"}' --max-retries=5
submit_task "Task that outlives its timeout" dead_lettered \
    test_task '{"message":"too slow","sleep_duration":5}' --timeout=1 --max-retries=0

echo "=== Idempotent Submission ==="
submit_task "Task with an idempotency key" completed \
    test_task '{"message":"once"}' --idempotency-key="example-once-$$"
once=${ids[${#ids[@]} - 1]}
again=$($DTQ task submit test_task '{"message":"once"}' --idempotency-key="example-once-$$" --quiet)
echo "  submitted again: task $again (the same task, not a new one)"

echo "=== Unknown Task Type ==="
# No worker handles it: it waits in its queue for one (dtq never guesses a
# handler), so --wait cancels it once everything else has ended.
submit_task "Task with unknown type (waits for a worker)" cancelled \
    unknown_task_type '{"test":"No worker handles this type"}'
unknown=${ids[${#ids[@]} - 1]}

echo ""
echo "All test tasks submitted."
status=0
if [[ $again != "$once" ]]; then
    echo "UNEXPECTED: resubmitting with the same idempotency key made task $again" >&2
    status=1
fi

if ((WAIT)); then
    echo ""
    echo "=== Following every task to its end ==="
    for i in "${!ids[@]}"; do
        id=${ids[$i]}
        if [[ $id == "$unknown" ]]; then
            $DTQ task cancel "$id" >/dev/null
        fi
        state=$($DTQ task watch "$id" --quiet || true)
        mark=ok
        if [[ $state != "${expected[$i]}" ]]; then
            mark=UNEXPECTED
            status=1
        fi
        printf '  %-10s %-14s %s  %s\n' "$mark" "${state:-?}" "$id" "${descriptions[$i]}"
    done
fi

echo ""
echo "Monitor them with:"
echo "  $DTQ task list"
echo "  $DTQ queue stats --watch"
echo "  $DTQ worker list"
echo "  $DTQ dlq list"
echo "  $DTQ system health"
echo "Follow one task:"
echo "  $DTQ task watch <TASK_ID>"
exit $status
