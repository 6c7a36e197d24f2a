from gossipkv.cli import app

app(prog_name="gossipkv")
