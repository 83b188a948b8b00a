"""An offline emulation of the video providers' wire protocols, over real HTTP."""
