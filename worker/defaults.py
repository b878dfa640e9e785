"""Default settings, each in one place with the reason for its value."""

from __future__ import annotations

from pathlib import Path

# The repository root: defaults point at its inbox/, outbox/ and models/ so a fresh clone works.
REPO_ROOT = Path(__file__).resolve().parent.parent
INBOX = REPO_ROOT / "inbox"
OUTBOX = REPO_ROOT / "outbox"
MODELS_DIR = REPO_ROOT / "models"
# The shipped MNIST model; `worker watch` and `worker predict` use it unless told otherwise.
MODEL = MODELS_DIR / "mnist.keras"

# Files up to 64 MiB: a big flatbed scan is a few MB; anything larger is almost surely not a scan.
MAX_FILE_BYTES = 64 * 1024 * 1024
# 50 megapixels (e.g. 600 dpi A4 is 35 MP). Checked from the header, before any decoding,
# so a 4 KB PNG that claims 60000x60000 pixels never allocates gigabytes.
MAX_PIXELS = 50_000_000
# At most 256 MiB decoded (pixels x channels x bytes per sample; for a progressive JPEG its
# coefficients too), also from the header: a 381 KB PNG of 7000x7000 16-bit RGBA would need
# 374 MiB. A 600 dpi A4 colour page is 105 MiB; peak memory stays well under 1 GiB.
MAX_DECODED_BYTES = 256 * 1024 * 1024
# Progressive JPEGs of more scans are refused: ordinary ones have about ten, and each scan is
# a pass over the whole image, so a few MB of scans can keep a decoder busy for a minute.
MAX_JPEG_SCANS = 64

# Batch up to 256 images per model call: one call per batch is what makes serving fast,
# and 256 28x28 images are only 800 KB of input.
BATCH_SIZE = 256
# How long (ms) the daemon may wait to fill a batch. A lone file is never held back longer.
MAX_DELAY_MS = 20
# A file with no close event (e.g. copied over SMB) is ready once unchanged for this long.
SETTLE_SECONDS = 1.0
# A file that inotify saw opened for writing and not yet closed is ready once unchanged this
# long: its writer may pause (a scanner between pages, a slow network) and still finish.
SETTLE_OPEN_SECONDS = 30.0
# A file its writer closed is ready at once (0): the lowest latency, and right for every writer
# that closes a file once, when it is whole. A scanner that closes its file between pages and
# opens it again for the next (scan-to-folder) needs a few seconds: docs/formats.md, "Scanners".
CLOSE_SETTLE_SECONDS = 0.0
# Full rescan of the inbox this often, because inotify events can be lost (queue overflow).
RESCAN_SECONDS = 300.0
# What becomes of a classified input: archived in outbox/processed/ (the first, the default), or
# removed. Named here, not in outbox.py, so the CLI's --on-success needs no outbox code to start.
ON_SUCCESS = ("keep", "delete")
# Bound on queued paths, so a backlog of a million files is never held in memory at once.
QUEUE_LIMIT = 4096

# Training: 5,000 images held out of the training split for validation and best-epoch choice.
VALIDATION_SIZE = 5000
# 20 epochs of the default arch fit the 30-minute budget on 2 cores.
EPOCHS = 20
TRAIN_BATCH_SIZE = 128
# Epochs without a better validation loss before stopping. Generous, because the cosine
# schedule's low-rate tail is where validation loss improves last (5 cut a run short).
PATIENCE = 8
# Augmentation strength: shifts and zoom up to 10 %, rotations up to 10 degrees.
AUGMENT = 0.1
# Peak of the cosine schedule (reached after a 5 % warm-up); Adam's usual 1e-3 range.
LEARNING_RATE = 2e-3
SEED = 42

# A file in hand each time a daemon died this many times is set aside as "crashed": once may
# be chance (a kill, a power cut), twice with it alone in hand is the file (a poison file).
CRASHES_BEFORE_SET_ASIDE = 2

# Serving threads. The daemon's model runs on one LiteRT thread, so the loop (reading, decoding,
# writing rows) keeps the other core of a 2-core machine; `worker predict` has nothing else to
# run meanwhile and gives the model both.
WATCH_MODEL_THREADS = 1
PREDICT_MODEL_THREADS = 2
# Threads decoding large images (OpenCV releases the GIL while decoding): one per core.
DECODE_THREADS = 2
# After a failed write (disk full, I/O error), wait this long before trying again: long enough
# not to spin on a full disk, short enough that service resumes soon after space is freed.
RETRY_SECONDS = 5.0
# With --broker: most batches out with the classify workers at a time. Enough to keep several
# worker processes busy while the watcher reads the next; each holds its files claimed.
IN_FLIGHT = 8
# With --broker: a batch without an answer this long is sent again (a second answer is dropped).
# The last resort: a batch whose worker died or which the transport lost is sent again within
# seconds by the heartbeats (worker/remote/liveness.py); this catches what they miss (heartbeats
# unreadable), at twice a classify worker's default visibility timeout.
RESEND_SECONDS = 600.0
# Reports list predictions below this confidence as unsure, for a person to look at. It is a
# first filter only: a confident answer can still be wrong (`worker report --low-confidence`).
LOW_CONFIDENCE = 0.9

# The daemon looks whether a new model version was published this often (one stat per file):
# soon enough that a publish is serving within a second, cheap enough to never show.
MODEL_CHECK_SECONDS = 1.0

# A document (PDF, multi-page TIFF) of more pages is refused: each page is a row, rendered one
# at a time (about 50 ms a page at 150 dpi), so 200 pages take seconds, never minutes.
MAX_PAGES = 200
# Files whose decoding cost their header cannot bound (documents, TIFF, HEIC, progressive JPEG,
# anything from SANDBOX_BYTES on) are decoded in a child process, killed after this many
# seconds: a 200-page document takes a few seconds, a bomb of nested PDF forms minutes.
DECODE_TIMEOUT = 30.0
# ... and whose address space may grow by this much: the decoded-bytes limit (256 MiB) with room
# for the normalising steps' copies; a small PDF holding a 40000x40000 image would need 4.8 GB.
DECODE_MEMORY = 1024 * 1024 * 1024
# Files from this size on are decoded in that child process and beside the loop (the slow
# lane): a page scan (a few hundred KB) decodes in milliseconds; a file of megabytes may be a
# 50-megapixel photo or a progressive JPEG of many scans, which can take seconds.
SANDBOX_BYTES = 4 * 1024 * 1024
# Distillation (``worker train --teacher``): the share of each training target that is the
# teacher's answer; the rest is the label.
TEACHER_WEIGHT = 0.5
# ``worker train --data DIR`` of one's own images without DIR/test or DIR/validation: the share
# of each class held out for the test, and for choosing the best epoch. A fifth tests a class of
# a few dozen images on more than a handful; a tenth is enough to rank epochs.
TEST_SHARE = 0.2
VALIDATION_SHARE = 0.1
# A folder dataset's preprocessed training images up to this size are read into memory and fed
# as the built-in datasets are (twice as fast an epoch as batches read from the memory-mapped
# file, which a larger set is: 1 GiB is about 340,000 images, held twice while tf.data copies).
IN_MEMORY_TRAINING_BYTES = 2**30
