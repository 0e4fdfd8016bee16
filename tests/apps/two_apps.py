from backstage import Backstage

one = Backstage("redis://127.0.0.1:1/0")
two = Backstage("redis://127.0.0.1:1/0")
