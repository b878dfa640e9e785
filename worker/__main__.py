from worker.cli import app

if __name__ == "__main__":  # not when a decode worker's start imports the main module
    app(prog_name="worker")
