from privfl.cli import app

app(prog_name="privfl")
