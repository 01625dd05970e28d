import Shared
print(FerryVersion.current)
