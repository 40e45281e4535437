"""The console's screens (one module and one .tcss file each) and its dialogs."""
